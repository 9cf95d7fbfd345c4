//! The price of every function and operator of the `cel` standard library. Work is values and bytes
//! touched; the caller adds one node and the operands' own work and memory.

use cel::common::ast::{CallExpr, Expr, LiteralValue};

use super::{Bound, Limits, Linear, Pricer, Size, TOUCHED_PER_UNIT, Unpriced, VALUE_BYTES};

/// The largest program a `matches` pattern may compile to; the pattern is compiled at policy
/// compile time under growing limits to learn its size.
const REGEX_PROGRAM_LIMIT: usize = 1024 * 1024;
/// The `regex` crate's default cap on its lazy DFA cache, held while one match runs.
const REGEX_CACHE_BYTES: u64 = 2 * 1024 * 1024;
/// Work to build one byte of compiled program (parse, translate, compile, several passes each).
const REGEX_WORK_PER_PROGRAM_BYTE: u64 = 4;
/// Work every compilation does whatever the pattern (`cel` compiles the pattern on every call,
/// and the `regex` crate prepares several engines and their caches: ~300 KiB allocated for
/// `^[a-z]+$`, measured by `policies/tests/cel_bound.rs`).
const REGEX_COMPILE_WORK: u64 = 32 * 1024;
/// Work per byte of text matched: the lazy DFA does one transition per byte.
const REGEX_WORK_PER_TEXT_BYTE: u64 = 2;

const SCALAR_FUNCTIONS: &[&str] = &[
    "_&&_",
    "_||_",
    "!_",
    "@not_strictly_false",
    "-_",
    "_-_",
    "_*_",
    "_/_",
    "_%_",
    "hasValue",
    "optional.none",
    "getDate",
    "getDayOfMonth",
    "getDayOfWeek",
    "getDayOfYear",
    "getFullYear",
    "getHours",
    "getMilliseconds",
    "getMinutes",
    "getMonth",
    "getSeconds",
];

/// Functions that read their argument once and produce a scalar: parsing, counting, searching.
const SCANNING_FUNCTIONS: &[&str] = &[
    "size",
    "int",
    "uint",
    "double",
    "bool",
    "duration",
    "timestamp",
    "contains",
    "startsWith",
    "endsWith",
];

pub(super) fn price(p: &mut Pricer<'_>, call: &CallExpr) -> Result<Bound, Unpriced> {
    let name = call.func_name.as_str();
    if name == "matches" {
        return matches(p, call);
    }
    let mut operands = Vec::with_capacity(call.args.len() + 1);
    if let Some(target) = &call.target {
        operands.push(p.node(target)?);
    }
    for arg in &call.args {
        operands.push(p.node(arg)?);
    }
    let own = match (name, operands.as_slice()) {
        (n, _) if SCALAR_FUNCTIONS.contains(&n) => Bound::scalar(),
        (n, [..]) if SCANNING_FUNCTIONS.contains(&n) => Bound {
            work: operands
                .iter()
                .fold(Linear::default(), |acc, o| acc.plus(&o.size.touched())),
            ..Bound::scalar()
        },
        ("_?_:_", [_, yes, no]) => Bound {
            size: yes.size.max(&no.size),
            items: yes.items.max(no.items),
            widest: yes.widest.max(no.widest),
            string: yes.string && no.string,
            ..Bound::default()
        },
        ("_==_" | "_!=_" | "_<_" | "_<=_" | "_>_" | "_>=_", [a, b]) => Bound {
            work: smaller(&a.size.touched(), &b.size.touched(), p.limits).clone(),
            ..Bound::scalar()
        },
        ("_+_", [a, b]) if appends_to_accumulator(call) => Bound {
            size: a.size.plus(&b.size),
            // The accumulator's items already count one per iteration.
            items: a.items.max(b.items),
            widest: a.widest.max(b.widest),
            string: false,
            work: b.size.touched(),
            // The appended list was just built (macros append a literal `[x]`, counted where it
            // is built) and its items move in; the accumulator grows by doubling, up to two slots
            // per item.
            memory: Linear::constant(b.items.saturating_mul(2 * VALUE_BYTES)),
        },
        ("_+_", [a, b]) if a.string || b.string => {
            // CEL adds a string only to a string: both sides are one value of their bytes.
            let bytes = a.size.bytes.plus(&b.size.bytes);
            Bound {
                size: Size::new(Linear::constant(1), bytes.clone()),
                string: true,
                work: bytes.plus_constant(2),
                memory: bytes.plus_constant(VALUE_BYTES),
                ..Bound::default()
            }
        }
        ("_+_", [a, b]) => {
            let size = a.size.plus(&b.size);
            let items = a.items.saturating_add(b.items);
            Bound {
                memory: a.size.copied().plus(&b.size.copied()),
                work: size.touched(),
                size,
                items,
                widest: a.widest.max(b.widest).max(items),
                string: false,
            }
        }
        ("_[_]" | "_[?_]", [collection, key]) => Bound {
            size: collection.size.wrapped(),
            items: collection.widest,
            widest: collection.widest,
            work: key.size.touched(),
            ..Bound::default()
        },
        ("_?._", [operand, _field]) => Bound {
            size: operand.size.wrapped(),
            items: operand.widest,
            widest: operand.widest,
            ..Bound::default()
        },
        ("@in", [item, collection]) => {
            let compared = item.size.touched().times(collection.items);
            Bound {
                work: smaller(&compared, &collection.size.touched(), p.limits)
                    .plus_constant(collection.items),
                ..Bound::scalar()
            }
        }
        ("string" | "bytes", [value]) => {
            // Numbers, timestamps and durations print in fewer than 40 bytes.
            let bytes = value.size.bytes.plus_constant(40);
            Bound {
                size: Size::new(Linear::constant(1), bytes.clone()),
                string: name == "string",
                work: value.size.touched(),
                memory: bytes,
                ..Bound::default()
            }
        }
        ("dyn" | "value" | "optional.of" | "optional.ofNonZeroValue", [value]) => Bound {
            size: value.size.wrapped(),
            items: value.items,
            widest: value.widest,
            string: value.string,
            work: value.size.touched(),
            memory: value.size.copied(),
        },
        ("or" | "orValue", [a, b]) => Bound {
            size: a.size.max(&b.size),
            items: a.items.max(b.items),
            widest: a.widest.max(b.widest),
            ..Bound::default()
        },
        ("type", [_]) => Bound {
            size: Size::string(64),
            memory: Linear::constant(64),
            ..Bound::default()
        },
        _ => {
            return Err(Unpriced(format!(
                "{} with {} argument(s) is not a function of the CEL standard library Phantom \
                 evaluates",
                display_name(name),
                operands.len()
            )));
        }
    };
    Ok(operands.iter().fold(own, |acc, o| acc.after(o)))
}

/// `s.matches(pattern)` or `matches(s, pattern)`, with a literal pattern.
fn matches(p: &mut Pricer<'_>, call: &CallExpr) -> Result<Bound, Unpriced> {
    let (text, pattern) = match (call.target.as_deref(), call.args.as_slice()) {
        (Some(text), [pattern]) | (None, [text, pattern]) => (text, pattern),
        _ => return Err(Unpriced("matches takes a string and a pattern".into())),
    };
    let Expr::Literal(LiteralValue::String(source)) = &pattern.expr else {
        return Err(Unpriced(
            "the pattern of matches() must be a string literal: a pattern read from the input \
             is a regular expression its author chose"
                .into(),
        ));
    };
    let program = compiled_size(source)?;
    let text = p.node(text)?;
    let source_bytes = source.len() as u64;
    p.needs_transient(
        program
            .saturating_add(REGEX_CACHE_BYTES)
            .saturating_add(source_bytes.saturating_mul(TOUCHED_PER_UNIT)),
    );
    Ok(Bound {
        work: text
            .size
            .touched()
            .times(REGEX_WORK_PER_TEXT_BYTE)
            .plus_constant(
                program
                    .saturating_mul(REGEX_WORK_PER_PROGRAM_BYTE)
                    .saturating_add(REGEX_COMPILE_WORK),
            ),
        ..Bound::scalar()
    }
    .after(&text))
}

/// An upper bound on the heap of `source` compiled by the `regex` crate: the smallest power of
/// two it compiles under.
fn compiled_size(source: &str) -> Result<u64, Unpriced> {
    let mut limit = 4096;
    loop {
        match regex::RegexBuilder::new(source).size_limit(limit).build() {
            Ok(_) => return Ok(limit as u64),
            Err(regex::Error::CompiledTooBig(_)) if limit < REGEX_PROGRAM_LIMIT => limit *= 2,
            Err(regex::Error::CompiledTooBig(_)) => {
                return Err(Unpriced(format!(
                    "the pattern of matches() compiles to more than {} KiB; simplify it (counted \
                     repetitions and Unicode classes multiply its size)",
                    REGEX_PROGRAM_LIMIT / 1024
                )));
            }
            Err(e) => {
                return Err(Unpriced(format!(
                    "the pattern of matches() is not a valid regular expression: {e}"
                )));
            }
        }
    }
}

/// Whether `call` is a comprehension step appending to its accumulator (`@result + [...]`):
/// only macros name `@result`, which CEL source cannot, and `cel` appends such steps in place.
fn appends_to_accumulator(call: &CallExpr) -> bool {
    matches!(call.args.first().map(|a| &a.expr), Some(Expr::Ident(name)) if name.starts_with('@'))
}

/// Either bound, whichever is smaller for the largest input (both are sound for an operation
/// bounded by the smaller side).
fn smaller<'a>(a: &'a Linear, b: &'a Linear, limits: &Limits) -> &'a Linear {
    let ceiling = limits.max_input_bytes.max(limits.max_input_values);
    if a.at_most(ceiling) <= b.at_most(ceiling) {
        a
    } else {
        b
    }
}

fn display_name(function: &str) -> String {
    match function.strip_prefix('_').and_then(|f| f.strip_suffix('_')) {
        Some(operator) => format!("the operator {}", operator.replace('_', "")),
        None => format!("{function}()"),
    }
}
