//! What can be known about an expression from its shape alone: the variables it reads and, when
//! it is plain, the type it produces.

use cel::common::ast::{EntryExpr, Expr, LiteralValue};
use cel::parser::Expression;

/// Collects the identifiers `expr` reads that no enclosing comprehension binds.
pub(super) fn free_variables(
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
pub(super) fn obvious_type(expr: &Expression) -> Option<&'static str> {
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

pub(super) fn entry_exprs(entry: &EntryExpr) -> Vec<&Expression> {
    match entry {
        EntryExpr::StructField(f) => vec![&f.value],
        EntryExpr::MapEntry(m) => vec![&m.key, &m.value],
    }
}
