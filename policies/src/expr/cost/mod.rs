//! The cost bound: what one expression may cost in time and memory, proven before it runs.
//!
//! The `cel` interpreter has no cost tracking and cannot be interrupted inside an expression, so
//! the bound is static and must be sound: for every input that passes
//! [`check_input_bounds`](super::check_input_bounds), evaluation does at most [`Estimate::cost`]
//! units of work and holds at most [`Estimate::memory`] bytes. An expression whose estimate is
//! over [`Limits::per_expression_cost`] or [`Limits::per_expression_memory`] does not compile.
//!
//! # The model
//!
//! - **Size.** A value's size has two parts: its *values* (itself and, for a list or map, every
//!   item, key and map value inside it, recursively) and its *bytes* (those of every string and
//!   bytes value inside it). An input variable has at most [`Limits::max_input_values`] values
//!   and [`Limits::max_input_bytes`] bytes, lists and maps of at most
//!   [`Limits::max_collection_items`] items, strings of at most [`Limits::max_string_bytes`]
//!   (all checked before evaluation). A part of a value is at most the value.
//! - **Bounds per node.** Every node gets upper bounds on the size of what it produces, on its own
//!   items (if it is a list or map) and on the widest list or map anywhere inside it. `+` adds
//!   both sides (so `a + a` doubles, and `.map(x, x + x)` chained n times is priced at 2ⁿ), a
//!   literal list adds its items, a selection or index is bounded by its operand, a comparison
//!   or `size()` is a scalar.
//! - **Work.** A unit is one node evaluated, or [`TOUCHED_PER_UNIT`] values and bytes touched:
//!   scanned (`contains`, `matches`, `size()` of a string, conversions), compared (`==` and the
//!   orderings; `in` compares against every item) or copied (`+`, building a list). Every call
//!   is priced by the sizes of its arguments, so an O(n) operation on a large value costs n.
//! - **Comprehensions** (`all`, `exists`, `exists_one`, `map`, `filter`) run their body once per
//!   item of the range. The body is priced with its element's size left as variables
//!   (`linear.rs`): the total is iterations × the body's constant part plus its per-size part ×
//!   the range's size, since the elements' sizes add up to less than their range's. Nested
//!   comprehensions multiply iterations.
//! - **The accumulator** of `map` and `filter` gains one item per iteration, priced by the same
//!   sum; `cel` appends in place, so a step does not copy the accumulator.
//! - **Memory** counts every value built. `cel` copies a value deeply whenever it is put in a list
//!   (a literal, an append, a `+`), so building costs [`VALUE_BYTES`] per value plus the bytes
//!   copied; an accumulator reserves up to two slots per item. A `matches` call also holds its
//!   compiled regular expression (sized by compiling the literal pattern when the policy is
//!   compiled) and the `regex` crate's lazy DFA cache, counted once, as the largest transient.
//! - **Functions** are priced one by one (`calls.rs`); a function the model does not price does not
//!   compile (the `cel` standard library has no other), and `matches` needs a literal pattern: a
//!   pattern read from the pod is a regular expression the pod's author chose.
//!
//! `policies/tests/cel_bound.rs` evaluates the worst inputs the bounds let through under a
//! counting allocator, for hand-written attacks and generated expressions, and asserts the
//! bytes held stay within [`Estimate::memory`] and the bytes allocated within a fixed multiple of
//! [`Estimate::cost`].

mod calls;
mod linear;
mod size;

use cel::common::ast::{EntryExpr, Expr, LiteralValue};
use cel::parser::Expression;

use linear::Linear;
use size::Size;

/// Bounds of the cost model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_collection_items: u64,
    pub max_string_bytes: u64,
    pub max_depth: usize,
    /// Bytes of the strings in one input variable: a pod stored in etcd is at most 1.5 MiB of
    /// JSON.
    pub max_input_bytes: u64,
    /// Values in one input variable, keys included (a large pod has a few thousand).
    pub max_input_values: u64,
    pub per_expression_cost: u64,
    pub per_policy_cost: u64,
    /// Bytes of values one expression may build.
    pub per_expression_memory: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_collection_items: 1024,
            max_string_bytes: 256 * 1024,
            max_depth: 64,
            max_input_bytes: 2 * 1024 * 1024,
            max_input_values: 64 * 1024,
            per_expression_cost: 1_000_000,
            per_policy_cost: 10_000_000,
            per_expression_memory: 16 * 1024 * 1024,
        }
    }
}

/// Values and bytes touched per unit of work: a node evaluation costs about as much as scanning,
/// comparing or copying this much.
pub const TOUCHED_PER_UNIT: u64 = 64;
/// Bytes one value occupies once copied into a collection: its slot, and the allocation behind
/// a string, list or map, with the allocator's overhead.
pub const VALUE_BYTES: u64 = 96;
/// The worst case of one expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// Units of work (see the module documentation).
    pub cost: u64,
    /// Bytes of values built, plus the largest transient allocation of one call.
    pub memory: u64,
}

/// Why an expression cannot be priced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpriced(pub String);

/// Worst-case cost and memory of evaluating `expr` against inputs within `limits`.
pub fn estimate(expr: &Expression, limits: &Limits) -> Result<Estimate, Unpriced> {
    let mut pricer = Pricer {
        limits,
        scope: Vec::new(),
        next_variable: 0,
        transient: 0,
    };
    let bound = pricer.node(expr)?;
    // Every variable is closed by its comprehension; the ceiling only guards a model bug.
    let ceiling = limits.max_input_bytes.max(limits.max_input_values);
    Ok(Estimate {
        cost: bound.work.at_most(ceiling).div_ceil(TOUCHED_PER_UNIT),
        memory: bound
            .memory
            .at_most(ceiling)
            .saturating_add(pricer.transient),
    })
}

/// What is known about the value of one node and the work of producing it. Work is counted in
/// values and bytes touched (a node evaluation is [`TOUCHED_PER_UNIT`]).
#[derive(Debug, Clone, Default)]
struct Bound {
    size: Size,
    /// The value's own items, if it is a list or map (what a comprehension over it iterates).
    items: u64,
    /// The most items of any list or map in the value, itself included.
    widest: u64,
    /// Known to be a string (a literal, a conversion, a concatenation with one): `+` on it is
    /// string concatenation, so its other operand is one string too, whatever it was read from.
    string: bool,
    work: Linear,
    /// Bytes of values built.
    memory: Linear,
}

impl Bound {
    fn scalar() -> Self {
        Self {
            size: Size::scalar(),
            ..Self::default()
        }
    }

    /// The bound of a value read from an input variable.
    fn input(limits: &Limits) -> Self {
        Self {
            size: Size::new(
                Linear::constant(limits.max_input_values),
                Linear::constant(limits.max_input_bytes),
            ),
            items: limits.max_collection_items,
            widest: limits.max_collection_items,
            ..Self::default()
        }
    }

    /// The value itself, read again with no work of its own (a variable).
    fn value(&self) -> Self {
        Self {
            size: self.size.clone(),
            items: self.items,
            widest: self.widest,
            ..Self::default()
        }
    }

    /// A part of this value (a field, an item, an element), produced with no work of its own.
    fn part(&self) -> Self {
        Self {
            items: self.widest,
            ..self.value()
        }
    }

    /// Adds the work and memory of evaluating `other` (an operand) to this bound.
    fn after(mut self, other: &Bound) -> Self {
        self.work = self.work.plus(&other.work);
        self.memory = self.memory.plus(&other.memory);
        self
    }
}

struct Pricer<'a> {
    limits: &'a Limits,
    /// Identifiers bound by enclosing comprehensions, innermost last.
    scope: Vec<(String, Bound)>,
    next_variable: usize,
    transient: u64,
}

impl Pricer<'_> {
    fn node(&mut self, expr: &Expression) -> Result<Bound, Unpriced> {
        let node = Linear::constant(TOUCHED_PER_UNIT);
        let mut bound = match &expr.expr {
            Expr::Unspecified => Bound::scalar(),
            Expr::Ident(name) => match self.scope.iter().rev().find(|(n, _)| n == name) {
                Some((_, b)) => b.value(),
                None => Bound::input(self.limits),
            },
            Expr::Literal(literal) => literal_bound(literal),
            Expr::Select(select) => {
                let operand = self.node(&select.operand)?;
                if select.test {
                    Bound::scalar().after(&operand)
                } else {
                    operand.part().after(&operand)
                }
            }
            Expr::List(list) => {
                let items = list
                    .elements
                    .iter()
                    .map(|e| self.node(e))
                    .collect::<Result<Vec<_>, _>>()?;
                self.collection(items.len() as u64, &items)
            }
            Expr::Map(map) => {
                let mut items = Vec::new();
                for entry in &map.entries {
                    match &entry.expr {
                        EntryExpr::MapEntry(m) => {
                            items.push(self.node(&m.key)?);
                            items.push(self.node(&m.value)?);
                        }
                        EntryExpr::StructField(_) => return Err(unsupported_message()),
                    }
                }
                self.collection(map.entries.len() as u64, &items)
            }
            Expr::Struct(_) => return Err(unsupported_message()),
            Expr::Call(call) => calls::price(self, call)?,
            Expr::Comprehension(c) => self.comprehension(c)?,
        };
        bound.work = bound.work.plus(&node);
        Ok(bound)
    }

    /// A list or map literal of `count` items made of `parts` (keys and values alike): each is
    /// copied in.
    fn collection(&self, count: u64, parts: &[Bound]) -> Bound {
        let size = parts
            .iter()
            .fold(Size::scalar(), |acc, b| acc.plus(&b.size));
        let copies = parts.iter().fold(Linear::constant(VALUE_BYTES), |acc, b| {
            acc.plus(&b.size.copied())
        });
        let built = Bound {
            work: size.touched(),
            size,
            items: count,
            widest: parts.iter().map(|b| b.widest).fold(count, u64::max),
            string: false,
            memory: copies,
        };
        parts.iter().fold(built, |acc, part| acc.after(part))
    }

    fn comprehension(
        &mut self,
        c: &cel::common::ast::ComprehensionExpr,
    ) -> Result<Bound, Unpriced> {
        let range = self.node(&c.iter_range)?;
        let init = self.node(&c.accu_init)?;
        let iterations = range.items;
        let (element_values, element_bytes) = (self.variable(), self.variable());
        let element = Bound {
            size: Size::new(
                Linear::variable(element_values),
                Linear::variable(element_bytes),
            ),
            items: range.widest,
            widest: range.widest,
            ..Bound::default()
        };
        let (accu_values, accu_bytes) = (self.variable(), self.variable());
        // An accumulator gains at most one item per iteration (macros append `[x]`).
        let accu_items = init.items.saturating_add(iterations);
        let accu = Bound {
            size: Size::new(Linear::variable(accu_values), Linear::variable(accu_bytes)),
            items: accu_items,
            widest: init.widest.max(accu_items),
            ..Bound::default()
        };
        let depth = self.scope.len();
        self.scope.push((c.iter_var.clone(), element.clone()));
        if let Some(second) = &c.iter_var2 {
            self.scope.push((second.clone(), element));
        }
        self.scope.push((c.accu_var.clone(), accu.clone()));
        let step = self.node(&c.loop_step);
        let cond = self.node(&c.loop_cond);
        self.scope.truncate(depth);
        let (step, cond) = (step?, cond?);

        let over_range = [
            (element_values, &range.size.values),
            (element_bytes, &range.size.bytes),
        ];
        let zero = Linear::constant(0);
        let without_accu = [(accu_values, &zero), (accu_bytes, &zero)];
        // The accumulator after the last iteration: a step that keeps it (`@result + [x]`, or a
        // conditional between that and `@result`) adds what it appends; one that replaces it
        // (`@result && x`) is bounded by what it produces. Macros write no other shape.
        let growth = (
            step.size.values.coefficient(accu_values),
            step.size.bytes.coefficient(accu_bytes),
        );
        let crossed = step.size.values.coefficient(accu_bytes) > 0
            || step.size.bytes.coefficient(accu_values) > 0;
        let appended = step.size.substitute(&without_accu);
        let final_size = match growth {
            _ if crossed => return Err(unpriced_accumulator()),
            (0, 0) => init.size.max(&appended.substitute(&over_range)),
            (0 | 1, 0 | 1) => Size::new(
                init.size
                    .values
                    .plus(&appended.values.summed_over(&over_range, iterations)),
                init.size
                    .bytes
                    .plus(&appended.bytes.summed_over(&over_range, iterations)),
            ),
            _ => return Err(unpriced_accumulator()),
        };
        // Within one iteration the accumulator is at most its final size.
        let at_final = [
            (accu_values, &final_size.values),
            (accu_bytes, &final_size.bytes),
        ];
        let close = |per_item: &Linear| {
            per_item
                .substitute(at_final[0].0, at_final[0].1)
                .substitute(at_final[1].0, at_final[1].1)
                .summed_over(&over_range, iterations)
        };
        let final_items = accu.items.max(step.items);
        let final_widest = accu.widest.max(step.widest);
        let total = Bound {
            size: final_size.clone(),
            items: final_items,
            widest: final_widest,
            string: false,
            work: close(&step.work.plus(&cond.work)),
            memory: close(&step.memory.plus(&cond.memory)),
        }
        .after(&range)
        .after(&init);
        // The result reads the accumulator once.
        self.scope.push((
            c.accu_var.clone(),
            Bound {
                size: final_size,
                items: final_items,
                widest: final_widest,
                ..Bound::default()
            },
        ));
        let result = self.node(&c.result);
        self.scope.truncate(depth);
        let result = result?;
        Ok(Bound {
            size: result.size.clone(),
            items: result.items,
            widest: result.widest,
            ..total
        }
        .after(&result))
    }

    fn variable(&mut self) -> usize {
        self.next_variable += 1;
        self.next_variable
    }

    fn needs_transient(&mut self, bytes: u64) {
        self.transient = self.transient.max(bytes);
    }
}

fn literal_bound(literal: &LiteralValue) -> Bound {
    let bytes = match literal {
        LiteralValue::String(s) => s.len() as u64,
        LiteralValue::Bytes(b) => b.len() as u64,
        _ => return Bound::scalar(),
    };
    Bound {
        size: Size::string(bytes),
        string: matches!(literal, LiteralValue::String(_)),
        memory: Linear::constant(bytes),
        ..Bound::default()
    }
}

fn unsupported_message() -> Unpriced {
    Unpriced("message construction is not available to Phantom's policies".into())
}

fn unpriced_accumulator() -> Unpriced {
    Unpriced("a comprehension whose accumulator more than doubles per item cannot be priced".into())
}

#[cfg(test)]
mod tests;
