//! The error collector every object's compilation writes into: each error names its field (and
//! the position inside an expression), and compilation goes on to find the others.

use std::collections::BTreeSet;

use phantom_crds::{CelRule, CompileError};

use super::Rule;
use crate::expr::{Expect, Expression, ExpressionError, Limits, Scope};

#[derive(Debug, Default)]
pub(super) struct Errors(pub(super) Vec<CompileError>);

impl Errors {
    pub(super) fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(CompileError {
            field: field.into(),
            message: message.into(),
            position: None,
        });
    }

    pub(super) fn expr(
        &mut self,
        field: String,
        source: &str,
        scope: Scope,
        expect: Expect,
        limits: &Limits,
    ) -> Option<Expression> {
        match Expression::compile(source, scope, expect, limits) {
            Ok(e) => Some(e),
            Err(ExpressionError { message, position }) => {
                self.0.push(CompileError {
                    field,
                    message,
                    position,
                });
                None
            }
        }
    }

    pub(super) fn rules(
        &mut self,
        field: &str,
        rules: &[CelRule],
        scope: Scope,
        limits: &Limits,
    ) -> Vec<Rule> {
        let mut names = BTreeSet::new();
        let mut out = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            if !names.insert(rule.name.as_str()) {
                self.push(
                    format!("{field}[{i}].name"),
                    format!("duplicate rule name {:?}", rule.name),
                );
            }
            let expr = self.expr(
                format!("{field}[{i}].expression"),
                &rule.expression,
                scope,
                Expect::Bool,
                limits,
            );
            let message_expr = rule.message_expression.as_ref().and_then(|m| {
                self.expr(
                    format!("{field}[{i}].messageExpression"),
                    m,
                    scope,
                    Expect::String,
                    limits,
                )
            });
            if rule.message_expression.is_some() && message_expr.is_none() {
                continue;
            }
            if let Some(expr) = expr {
                out.push(Rule {
                    name: rule.name.clone(),
                    expr,
                    message: rule.message.clone(),
                    message_expr,
                });
            }
        }
        out
    }

    /// `Ok(value)` when nothing was collected, every error otherwise.
    pub(super) fn finish<T>(self, value: T) -> Result<T, Vec<CompileError>> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self.0)
        }
    }
}
