//! The cost bound. The `cel` crate has no runtime cost tracking, so Phantom bounds evaluation
//! cost in two halves that together guarantee termination within a budget:
//!
//! 1. **Inputs are bounded** ([`check_input_bounds`]): before any expression runs, the variables
//!    are walked once; a list or map with more than `max_collection_items` entries, a string
//!    longer than `max_string_bytes`, or nesting deeper than `max_depth` refuses the evaluation
//!    (the admission answer is then a deny: fail closed).
//! 2. **Expressions are priced at compile time** ([`estimate`]): every AST node costs 1; a
//!    string function (`matches`, `contains`, ...) costs `max_string_bytes / 1024`; a
//!    comprehension (`all`, `exists`, `map`, `filter`...) costs its range plus
//!    `max_collection_items` times its loop body, so nested comprehensions multiply. An
//!    expression whose worst case exceeds `per_expression_cost` does not compile; a policy whose
//!    expressions sum above `per_policy_cost` does not compile either.
//!
//! CEL has no loops or recursion besides comprehensions, so with bounded inputs the estimate is
//! an upper bound on the nodes the interpreter visits (collections built inside an expression are
//! at most `max_collection_items` times the expression's own size, which the per-node pricing of
//! the comprehension over them already covers up to that constant factor).

use cel::common::ast::{EntryExpr, Expr, LiteralValue};
use cel::parser::Expression;
use serde_json::Value;

/// Bounds of the cost model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_collection_items: u64,
    pub max_string_bytes: u64,
    pub max_depth: usize,
    pub per_expression_cost: u64,
    pub per_policy_cost: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_collection_items: 1024,
            max_string_bytes: 256 * 1024,
            max_depth: 64,
            per_expression_cost: 1_000_000,
            per_policy_cost: 10_000_000,
        }
    }
}

const STRING_FUNCTIONS: &[&str] = &[
    "matches",
    "contains",
    "startsWith",
    "endsWith",
    "lowerAscii",
    "upperAscii",
    "split",
    "replace",
    "indexOf",
    "join",
];

/// Worst-case cost of evaluating `expr` against inputs within `limits`.
pub fn estimate(expr: &Expression, limits: &Limits) -> u64 {
    let sum = |items: &mut dyn Iterator<Item = &Expression>| {
        items.fold(0u64, |acc, e| acc.saturating_add(estimate(e, limits)))
    };
    match &expr.expr {
        Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => 1,
        Expr::Select(s) => 1u64.saturating_add(estimate(&s.operand, limits)),
        Expr::Call(call) => {
            let own = if STRING_FUNCTIONS.contains(&call.func_name.as_str()) {
                (limits.max_string_bytes / 1024).max(1)
            } else {
                1
            };
            own.saturating_add(sum(&mut call.args.iter()))
                .saturating_add(
                    call.target
                        .as_deref()
                        .map(|t| estimate(t, limits))
                        .unwrap_or(0),
                )
        }
        Expr::List(list) => 1u64.saturating_add(sum(&mut list.elements.iter())),
        Expr::Map(map) => 1u64.saturating_add(sum(&mut map
            .entries
            .iter()
            .flat_map(|e| entry_exprs(&e.expr)))),
        Expr::Struct(st) => 1u64.saturating_add(sum(&mut st
            .entries
            .iter()
            .flat_map(|e| entry_exprs(&e.expr)))),
        Expr::Comprehension(c) => {
            let body =
                estimate(&c.loop_cond, limits).saturating_add(estimate(&c.loop_step, limits));
            estimate(&c.iter_range, limits)
                .saturating_add(estimate(&c.accu_init, limits))
                .saturating_add(limits.max_collection_items.saturating_mul(body))
                .saturating_add(estimate(&c.result, limits))
        }
    }
}

fn entry_exprs(entry: &EntryExpr) -> Vec<&Expression> {
    match entry {
        EntryExpr::StructField(f) => vec![&f.value],
        EntryExpr::MapEntry(m) => vec![&m.key, &m.value],
    }
}

/// Collects the identifiers `expr` reads that no enclosing comprehension binds.
pub fn free_variables(
    expr: &Expression,
    bound: &mut Vec<String>,
    out: &mut std::collections::BTreeSet<String>,
) {
    match &expr.expr {
        Expr::Ident(name) => {
            if !bound.iter().any(|b| b == name) {
                out.insert(name.clone());
            }
        }
        Expr::Unspecified | Expr::Literal(_) => {}
        Expr::Select(s) => free_variables(&s.operand, bound, out),
        Expr::Call(call) => {
            if let Some(t) = &call.target {
                free_variables(t, bound, out);
            }
            call.args.iter().for_each(|a| free_variables(a, bound, out));
        }
        Expr::List(list) => list
            .elements
            .iter()
            .for_each(|e| free_variables(e, bound, out)),
        Expr::Map(map) => map
            .entries
            .iter()
            .flat_map(|e| entry_exprs(&e.expr))
            .for_each(|e| free_variables(e, bound, out)),
        Expr::Struct(st) => st
            .entries
            .iter()
            .flat_map(|e| entry_exprs(&e.expr))
            .for_each(|e| free_variables(e, bound, out)),
        Expr::Comprehension(c) => {
            free_variables(&c.iter_range, bound, out);
            free_variables(&c.accu_init, bound, out);
            let before = bound.len();
            bound.push(c.iter_var.clone());
            bound.extend(c.iter_var2.clone());
            bound.push(c.accu_var.clone());
            free_variables(&c.loop_cond, bound, out);
            free_variables(&c.loop_step, bound, out);
            free_variables(&c.result, bound, out);
            bound.truncate(before);
        }
    }
}

/// The result type of `expr` when it is obvious without knowing the inputs (literals, logic,
/// comparisons, arithmetic on literals); `None` when it depends on the inputs.
pub fn obvious_type(expr: &Expression) -> Option<&'static str> {
    match &expr.expr {
        Expr::Literal(lit) => Some(match lit {
            LiteralValue::Boolean(_) => "bool",
            LiteralValue::String(_) => "string",
            LiteralValue::Int(_) => "int",
            LiteralValue::UInt(_) => "uint",
            LiteralValue::Double(_) => "double",
            LiteralValue::Bytes(_) => "bytes",
            LiteralValue::Null => "null",
        }),
        Expr::List(_) => Some("list"),
        Expr::Map(_) => Some("map"),
        Expr::Call(call) => match call.func_name.as_str() {
            "_&&_" | "_||_" | "!_" | "_==_" | "_!=_" | "_<_" | "_<=_" | "_>_" | "_>=_" | "@in" => {
                Some("bool")
            }
            "_+_" | "_-_" | "_*_" | "_/_" | "_%_" => {
                let types: Vec<_> = call.args.iter().map(obvious_type).collect();
                match types.as_slice() {
                    [Some(a), Some(b)] if a == b => Some(a),
                    _ => None,
                }
            }
            "size" => Some("int"),
            _ => None,
        },
        _ => None,
    }
}

/// Refuses inputs outside the cost model's bounds, naming the offending path.
pub fn check_input_bounds(name: &str, value: &Value, limits: &Limits) -> Result<(), String> {
    // The path is only rendered on failure: the walk itself allocates nothing.
    fn walk(v: &Value, depth: usize, limits: &Limits) -> Result<(), (Vec<String>, String)> {
        if depth > limits.max_depth {
            return Err((
                Vec::new(),
                format!("is nested deeper than {} levels", limits.max_depth),
            ));
        }
        let too_many = |n: usize| (n as u64 > limits.max_collection_items).then_some(n);
        match v {
            Value::String(s) if s.len() as u64 > limits.max_string_bytes => Err((
                Vec::new(),
                format!(
                    "is a string of {} bytes, more than {}",
                    s.len(),
                    limits.max_string_bytes
                ),
            )),
            Value::Array(items) => {
                if let Some(n) = too_many(items.len()) {
                    return Err((
                        Vec::new(),
                        format!("has {n} items, more than {}", limits.max_collection_items),
                    ));
                }
                for (i, item) in items.iter().enumerate() {
                    walk(item, depth + 1, limits).map_err(|(mut path, m)| {
                        path.push(format!("[{i}]"));
                        (path, m)
                    })?;
                }
                Ok(())
            }
            Value::Object(map) => {
                if let Some(n) = too_many(map.len()) {
                    return Err((
                        Vec::new(),
                        format!("has {n} entries, more than {}", limits.max_collection_items),
                    ));
                }
                for (k, item) in map {
                    walk(item, depth + 1, limits).map_err(|(mut path, m)| {
                        path.push(format!(".{k}"));
                        (path, m)
                    })?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    walk(value, 0, limits).map_err(|(path, message)| {
        let path: String = path.iter().rev().map(String::as_str).collect();
        format!("{name}{path} {message}")
    })
}
