/// Errors of the controller library. Each names the object and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },

    /// The API server does not serve one of Phantom's resources.
    #[error(
        "the API server does not serve {resource}: install Phantom's CRDs (kubectl apply -f crds/yaml/, or the Helm chart) and the controller picks them up"
    )]
    MissingCrd { resource: String },

    /// Generating, parsing or storing a certificate failed.
    #[error("webhook certificate ({what}): {message}")]
    Certificate {
        what: String,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// The settings contradict each other or name something unusable.
    #[error("configuration: {0}")]
    Config(String),

    /// The decision-seal key could not be made or read.
    #[error(transparent)]
    Seal(#[from] phantom_seal::Error),
    /// The status port could not be served (`--metrics-listen`).
    #[cfg(feature = "server")]
    #[error(transparent)]
    Status(#[from] phantom_process::Error),

    /// Writing a file (the serving certificate for a local admission process) failed.
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A certificate error caused by `source` while doing `what`.
    pub fn certificate(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Certificate {
            what: what.into(),
            message: source.to_string(),
            source: Some(Box::new(source)),
        }
    }

    /// A closure wrapping a [`kube::Error`] with what was being done.
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let action = action.into();
        move |source| Self::Kube { action, source }
    }

    /// Whether the error is the API server answering 404 for a whole resource type.
    pub fn is_not_found(e: &kube::Error) -> bool {
        matches!(e, kube::Error::Api(s) if s.code == 404)
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
