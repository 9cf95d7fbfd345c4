use phantom_crds::Position;

/// Errors of the policy engine. Compile errors name the object, the field and the position;
/// evaluation errors name the policy and the rule. None carries a secret value: inputs are pod
/// specs and names, and messages quote expressions, never evaluated data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{object}: {field}: {message}{}", position.as_ref().map(|p| format!(" (line {}, column {})", p.line, p.column)).unwrap_or_default())]
    Compile {
        object: String,
        field: String,
        message: String,
        position: Option<Position>,
    },

    #[error("policy {policy}, rule {rule}: evaluation failed: {message}")]
    Evaluation {
        policy: String,
        rule: String,
        message: String,
    },

    #[error("policy {policy}, rule {rule}: cost budget exceeded: {message}")]
    Budget {
        policy: String,
        rule: String,
        message: String,
    },

    #[error("plugin {plugin}: {kind}")]
    Plugin {
        plugin: String,
        kind: crate::wasm::PluginFailure,
    },

    #[error("the input is outside what the cost model allows: {0}; such objects are refused")]
    InputTooLarge(String),

    #[error("policy evaluation is overloaded ({0}); retry")]
    Overloaded(String),

    #[error("{0}")]
    Input(String),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
