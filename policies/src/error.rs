use crate::compile::ObjectErrors;

/// Errors of the policy engine's fallible entry points. Evaluation never fails as a whole: a
/// failing rule or plugin becomes a denial in the [`crate::Decision`] (fail closed), and a
/// refused key release is a [`crate::KeyReleaseRefusal`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Objects that did not compile, each with every error (field and position).
    #[error("{} object(s) do not compile:\n{}", .0.len(), .0.iter().map(ToString::to_string).collect::<String>())]
    Compile(Vec<ObjectErrors>),

    /// No evaluation slot became free in time; the caller should refuse (fail closed) and retry later.
    #[error("policy evaluation is overloaded: {0}")]
    Overloaded(String),

    /// The evaluation reached its deadline and stopped (its slot is free again).
    #[error(
        "policy evaluation reached its deadline while evaluating PhantomPolicy {policy} and stopped"
    )]
    Deadline { policy: String },

    /// The WASM engine could not start (for example, the host refused its virtual memory reservation).
    #[error(
        "starting the WASM plugin host failed: {0}; check the process's virtual memory limit (ulimit -v)"
    )]
    Host(String),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
