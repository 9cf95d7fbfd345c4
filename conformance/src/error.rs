use std::path::PathBuf;
use std::time::Duration;

/// Errors of the test environment; each says what failed and how to retry or where to look.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "installing the test tools failed ({script} exited with {status}); its output is above. \
         Fix the cause and re-run: the script resumes where it stopped"
    )]
    Install {
        script: PathBuf,
        status: std::process::ExitStatus,
    },

    #[error("the install script did not report {key}; run {script} --print-paths by hand")]
    ToolMissing { key: &'static str, script: PathBuf },

    #[error("starting {what} ({program}) failed: {source}")]
    Spawn {
        what: &'static str,
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{what} exited early with {status}; last lines of {log}:\n{tail}")]
    Exited {
        what: &'static str,
        status: std::process::ExitStatus,
        log: PathBuf,
        tail: String,
    },

    #[error("timed out after {after:?} waiting for {what}{}", last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    Timeout {
        what: String,
        after: Duration,
        last_error: Option<String>,
    },

    #[error("HTTP {what}: {source}")]
    Http {
        what: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("starting the admission webhook failed: {0}")]
    Admission(#[from] phantom_admission::Error),

    /// A suite asked for something its settings cannot give.
    #[error("{0}")]
    Setup(String),

    /// The in-process controller failed to start.
    #[error(transparent)]
    Controller(#[from] phantom_controller::Error),

    #[error("generating TLS material failed: {0}")]
    Pki(#[from] rcgen::Error),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("Kubernetes API call failed ({context}): {source}")]
    Kube {
        context: String,
        #[source]
        source: kube::Error,
    },

    #[error("building a Kubernetes client from {kubeconfig}: {message}")]
    KubeConfig {
        kubeconfig: PathBuf,
        message: String,
    },

    #[error("OpenBao {method} {path} answered {status}: {errors}")]
    OpenBao {
        method: &'static str,
        path: String,
        status: u16,
        errors: String,
    },

    #[error("OpenBao {method} {path} could not be reached: {source}")]
    OpenBaoTransport {
        method: &'static str,
        path: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("{command} failed with {status}: {stderr}")]
    Command {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }

    pub(crate) fn kube(context: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let context = context.into();
        move |source| Self::Kube { context, source }
    }

    /// The HTTP status of an OpenBao API error, if this is one.
    pub fn openbao_status(&self) -> Option<u16> {
        match self {
            Self::OpenBao { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
