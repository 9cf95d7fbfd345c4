//! CEL expressions: compiled once (syntax, unknown variables, obvious type errors and a static
//! cost estimate are checked at compile time), evaluated many times against bounded inputs.

mod bounds;
pub mod cost;
mod shape;

use std::collections::BTreeSet;
use std::sync::Arc;

pub use bounds::check_input_bounds;
pub use cost::{Estimate, Limits, TOUCHED_PER_UNIT};
use phantom_crds::Position;

/// The variables an expression may use, by where it appears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `matchConditions`, `validations`, canary keys: the admission environment.
    Admission,
    /// `keyRelease.conditions`: the pod, the binding and the verified attestation claims.
    KeyRelease,
    /// `AttestationRequirement.conditions`: the verified claims only.
    Attestation,
}

impl Scope {
    pub fn variables(self) -> &'static [&'static str] {
        match self {
            Scope::Admission => &["object", "oldObject", "namespaceObject", "request"],
            Scope::KeyRelease => &["pod", "binding", "attestation"],
            Scope::Attestation => &["attestation"],
        }
    }
}

/// What an expression must produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Bool,
    String,
}

/// A compiled CEL expression.
#[derive(Clone)]
pub struct Expression {
    source: Arc<str>,
    program: Arc<cel::Program>,
    expect: Expect,
    estimate: Estimate,
}

impl std::fmt::Debug for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expression")
            .field("source", &self.source)
            .field("estimate", &self.estimate)
            .finish()
    }
}

/// A compile error inside one expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpressionError {
    pub message: String,
    pub position: Option<Position>,
}

/// Evaluation failure of one expression (its message never contains evaluated data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvalError {
    /// The interpreter failed (missing field, no such overload, division by zero...).
    Failed(String),
    /// The result had the wrong type.
    WrongType {
        expected: &'static str,
        got: &'static str,
    },
}

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EvalError::Failed(m) => f.write_str(m),
            EvalError::WrongType { expected, got } => write!(
                f,
                "the expression must evaluate to {expected}, it evaluated to {got}"
            ),
        }
    }
}

impl Expression {
    /// Compiles `source` for `scope`, expecting a result of type `expect`.
    pub fn compile(
        source: &str,
        scope: Scope,
        expect: Expect,
        limits: &Limits,
    ) -> Result<Self, ExpressionError> {
        let program = cel::Program::compile(source).map_err(|errors| {
            let first = errors.errors.first();
            ExpressionError {
                message: first
                    .map(|e| e.msg.clone())
                    .unwrap_or_else(|| errors.to_string()),
                position: first.and_then(|e| {
                    // The parser reports 1-based lines and columns.
                    let (line, column) = e.pos;
                    (line > 0 && column > 0).then_some(Position {
                        line: line as u32,
                        column: column as u32,
                    })
                }),
            }
        })?;
        let allowed: BTreeSet<&str> = scope.variables().iter().copied().collect();
        let mut free = BTreeSet::new();
        shape::free_variables(program.expression(), &mut Vec::new(), &mut free);
        let unknown: Vec<&str> = free
            .iter()
            .map(String::as_str)
            .filter(|v| !allowed.contains(v))
            .collect();
        if let Some(first) = unknown.first() {
            return Err(ExpressionError {
                message: format!(
                    "undeclared reference to '{first}'; the variables available here are {}",
                    scope.variables().join(", ")
                ),
                position: position_of_identifier(source, first),
            });
        }
        if let Some(found) = shape::obvious_type(program.expression()) {
            let wanted = match expect {
                Expect::Bool => "bool",
                Expect::String => "string",
            };
            if found != wanted {
                return Err(ExpressionError {
                    message: format!(
                        "the expression must evaluate to {wanted}, but it is a {found}"
                    ),
                    position: Some(Position { line: 1, column: 1 }),
                });
            }
        }
        let whole = || Some(Position { line: 1, column: 1 });
        let estimate =
            cost::estimate(program.expression(), limits).map_err(|unpriced| ExpressionError {
                message: unpriced.0,
                position: whole(),
            })?;
        if estimate.cost > limits.per_expression_cost {
            return Err(ExpressionError {
                message: format!(
                    "estimated worst-case cost {} exceeds the per-expression budget of {} \
                     (each comprehension over an input list counts {} iterations, and every \
                     operation is priced by the size of what it reads; nest fewer \
                     comprehensions or read less)",
                    estimate.cost, limits.per_expression_cost, limits.max_collection_items
                ),
                position: whole(),
            });
        }
        if estimate.memory > limits.per_expression_memory {
            return Err(ExpressionError {
                message: format!(
                    "the values this expression may build take up to {} bytes, more than the \
                     per-expression budget of {} (`+` on strings and lists adds both sides' \
                     sizes, so repeated concatenation grows geometrically)",
                    estimate.memory, limits.per_expression_memory
                ),
                position: whole(),
            });
        }
        Ok(Self {
            source: source.into(),
            program: Arc::new(program),
            expect,
            estimate,
        })
    }

    /// The expression's text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Worst-case cost for inputs within [`Limits`].
    pub fn estimated_cost(&self) -> u64 {
        self.estimate.cost
    }

    /// Worst-case cost and memory for inputs within [`Limits`].
    pub fn estimate(&self) -> Estimate {
        self.estimate
    }

    fn run(&self, ctx: &cel::Context) -> Result<cel::Value, EvalError> {
        self.program
            .execute(ctx)
            .map_err(|e| EvalError::Failed(e.to_string()))
    }

    /// Evaluates a bool expression.
    pub fn eval_bool(&self, ctx: &cel::Context) -> Result<bool, EvalError> {
        debug_assert_eq!(self.expect, Expect::Bool);
        match self.run(ctx)? {
            cel::Value::Bool(b) => Ok(b),
            other => Err(EvalError::WrongType {
                expected: "bool",
                got: type_name(&other),
            }),
        }
    }

    /// Evaluates a string expression.
    pub fn eval_string(&self, ctx: &cel::Context) -> Result<String, EvalError> {
        match self.run(ctx)? {
            cel::Value::String(s) => Ok(s.to_string()),
            other => Err(EvalError::WrongType {
                expected: "string",
                got: type_name(&other),
            }),
        }
    }
}

fn type_name(v: &cel::Value) -> &'static str {
    match v {
        cel::Value::List(_) => "list",
        cel::Value::Map(_) => "map",
        cel::Value::Function(..) => "function",
        cel::Value::Int(_) => "int",
        cel::Value::UInt(_) => "uint",
        cel::Value::Float(_) => "double",
        cel::Value::String(_) => "string",
        cel::Value::Bytes(_) => "bytes",
        cel::Value::Bool(_) => "bool",
        cel::Value::Duration(_) => "duration",
        cel::Value::Timestamp(_) => "timestamp",
        cel::Value::Opaque(_) => "opaque",
        cel::Value::Struct(_) => "struct",
        cel::Value::Null => "null",
    }
}

/// 1-based line/column of the first whole-word occurrence of `ident` in `source`.
fn position_of_identifier(source: &str, ident: &str) -> Option<Position> {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    for (line_no, line) in source.lines().enumerate() {
        let mut from = 0;
        while let Some(i) = line[from..].find(ident) {
            let start = from + i;
            let end = start + ident.len();
            let before = line[..start].chars().next_back();
            let after = line[end..].chars().next();
            if !before.is_some_and(|c| is_word(c) || c == '.') && !after.is_some_and(is_word) {
                return Some(Position {
                    line: line_no as u32 + 1,
                    column: line[..start].chars().count() as u32 + 1,
                });
            }
            from = end;
        }
    }
    None
}

/// The standard library, built once: building it per evaluation costs tens of microseconds.
fn stdlib() -> Arc<cel::Env> {
    static STDLIB: std::sync::OnceLock<Arc<cel::Env>> = std::sync::OnceLock::new();
    STDLIB.get_or_init(|| Arc::new(cel::Env::stdlib())).clone()
}

/// Converts JSON to a CEL value directly (serde's generic path is several times slower).
pub fn to_cel(value: &serde_json::Value) -> cel::Value {
    use serde_json::Value as J;
    match value {
        J::Null => cel::Value::Null,
        J::Bool(b) => cel::Value::Bool(*b),
        J::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            _ => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => cel::Value::String(Arc::new(s.clone())),
        J::Array(items) => cel::Value::List(Arc::new(items.iter().map(to_cel).collect())),
        J::Object(map) => {
            let map: std::collections::HashMap<cel::objects::Key, cel::Value> = map
                .iter()
                .map(|(k, v)| (cel::objects::Key::from(k.clone()), to_cel(v)))
                .collect();
            cel::Value::Map(cel::objects::Map { map: Arc::new(map) })
        }
    }
}

/// Builds an evaluation context from JSON variables (the caller checked their bounds).
pub fn context(
    vars: &[(&str, &serde_json::Value)],
) -> Result<cel::Context<'static, 'static>, String> {
    let mut ctx = cel::Context::with_env(stdlib());
    for (name, value) in vars {
        ctx.add_variable_from_value(*name, to_cel(value));
    }
    Ok(ctx)
}

#[cfg(test)]
mod tests;
