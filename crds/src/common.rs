//! Pieces shared by the three resources.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A named CEL expression with the message shown when it evaluates to `false`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CelRule {
    /// Name of the rule, unique within its list; status errors and decisions refer to it.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// CEL expression that must evaluate to a bool.
    #[schemars(length(min = 1, max = 10240))]
    pub expression: String,
    /// Static message returned when the expression is `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// CEL expression producing the message (a string); wins over `message` when it evaluates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_expression: Option<String>,
}

/// A named CEL expression used to select objects (like ValidatingAdmissionPolicy's
/// `matchConditions`): the object matches only when every condition is `true`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MatchCondition {
    /// Name of the condition, unique within the policy.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// CEL expression over `object`, `oldObject`, `namespaceObject` and `request`.
    #[schemars(length(min = 1, max = 10240))]
    pub expression: String,
}

/// Reference to a cluster-scoped object by name.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct LocalObjectReference {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Position of an error inside a CEL expression (1-based).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct Position {
    pub line: u32,
    pub column: u32,
}

/// One compilation or validation error, reported in a resource's status.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompileError {
    /// JSON path of the offending field, for example `spec.rules.validations[2].expression`.
    pub field: String,
    /// What is wrong and what to do about it.
    pub message: String,
    /// Where in the expression the error is, when the field holds an expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
}

/// What a duration field accepts (Go's `time.Duration` text, as the types parse it: `30s`,
/// `4m`, `1h30m`), so the API server refuses what Phantom could not read: one unreadable object
/// would otherwise be stored and have to be skipped by every watcher.
pub const DURATION_PATTERN: &str = r"^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|μs|ms|s|m|h))+)$";

/// Condition types written by the controller.
pub mod condition_types {
    /// The resource's expressions and plugins compiled.
    pub const COMPILED: &str = "Compiled";
    /// The resource is in force (compiled and distributed).
    pub const READY: &str = "Ready";
    /// A SecretBinding is admitted by at least one PhantomPolicy.
    pub const ADMITTED: &str = "Admitted";
    /// A SecretBinding's deliveries collide with no other binding of its namespace (a pod both
    /// select is refused at admission while they do).
    pub const DELIVERIES_DISTINCT: &str = "DeliveriesDistinct";
}

/// Status common to the three resources.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommonStatus {
    /// Standard Kubernetes conditions (`Compiled`, `Ready`, and `Admitted` for bindings).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `sha256:` digest of the compiled form now in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compiled_digest: Option<String>,
    /// Every error found by the last compilation, with the failing expression's position.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<CompileError>,
}

impl CommonStatus {
    /// The condition of the given type, if present.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Whether the condition of the given type is present with status `True`.
    pub fn is_true(&self, type_: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.status == "True")
    }
}
