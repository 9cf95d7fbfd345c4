//! The CEL cost bound holds: every expression that compiles, evaluated against the worst inputs
//! the input bounds let through, holds no more memory than its estimate and allocates in
//! proportion to its estimated work. Hand-written attacks and generated expressions (the CEL
//! compile + evaluate fuzz target; `PROPTEST_CASES` runs more) are measured under a counting
//! allocator. Everything runs in one test: the allocator counts the whole process.

use phantom_policies::expr::{Expect, Expression, Limits, Scope, check_input_bounds, context};
use phantom_testkit::alloc::Counting;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

#[global_allocator]
static ALLOCATOR: Counting = Counting::new();

/// Small bounds keep each evaluation fast; the model is the same at any size.
fn limits() -> Limits {
    Limits {
        max_collection_items: 24,
        max_string_bytes: 2048,
        max_depth: 12,
        max_input_bytes: 12 * 1024,
        max_input_values: 2048,
        ..Limits::default()
    }
}

/// What the interpreter holds beyond the values it builds: its stack of temporaries, the
/// context's variable table, the result.
const HELD_SLACK: u64 = 128 * 1024;
/// Bytes one unit of estimated work may allocate (a node evaluation allocates at most a few
/// small temporaries; 64 footprint touched copy at most 64 bytes or a few item slots).
const ALLOCATED_PER_UNIT: u64 = 1024;

/// Inputs at the edge of the bounds, in the shapes the expressions read.
fn worst_inputs(limits: &Limits) -> Vec<Value> {
    let items = limits.max_collection_items as usize;
    // Strings sized so that a list of `items` of them fills the footprint.
    let share =
        (limits.max_input_bytes as usize / (items + 4)).min(limits.max_string_bytes as usize);
    let long = "x".repeat(share.saturating_sub(16));
    let longest = "y".repeat(limits.max_string_bytes as usize);
    let list: Vec<Value> = (0..items - 4)
        .map(|i| json!(format!("{i}{long}")))
        .collect();
    let containers: Vec<Value> = (0..items / 2)
        .map(|i| json!({"name": format!("c{i}"), "image": format!("{}{i}", &long[..long.len() / 3])}))
        .collect();
    let map: serde_json::Map<String, Value> = (0..items / 2)
        .map(|i| (format!("k{i}"), json!(long[..long.len() / 3].to_string())))
        .collect();
    let inputs = vec![
        json!({"a": long.clone(), "b": long.clone(), "l": list.clone()}),
        json!({"spec": {"containers": containers}, "m": map, "a": "abc"}),
        json!({"l": (0..items).map(|i| json!([i, i])).collect::<Vec<_>>(), "a": long[..32].to_string()}),
        // The longest strings the bounds allow, where doubling hurts most.
        json!({"a": longest.clone(), "b": longest.clone(), "l": [longest.clone(), longest]}),
    ];
    for input in &inputs {
        check_input_bounds("object", input, limits).expect("the worst inputs are within bounds");
    }
    inputs
}

struct Measured {
    held: u64,
    allocated: u64,
}

fn measure(expression: &Expression, input: &Value) -> Measured {
    let ctx = context(&[("object", input)]).expect("context");
    ALLOCATOR.reset_peak();
    let before = ALLOCATOR.current() as u64;
    let allocated_before = ALLOCATOR.total_allocated() as u64;
    let result = expression.eval_bool(&ctx);
    let held = (ALLOCATOR.peak() as u64).saturating_sub(before);
    let allocated = ALLOCATOR.total_allocated() as u64 - allocated_before;
    drop(result);
    Measured { held, allocated }
}

/// Compiles `source` and, when it compiles, checks the bound on every worst input.
fn check(source: &str, limits: &Limits, inputs: &[Value]) -> Result<bool, String> {
    let Ok(expression) = Expression::compile(source, Scope::Admission, Expect::Bool, limits) else {
        return Ok(false);
    };
    let estimate = expression.estimate();
    for input in inputs {
        let m = measure(&expression, input);
        if std::env::var_os("CEL_BOUND_VERBOSE").is_some() {
            eprintln!(
                "{:>9} held / {:>10} memory  {:>9} allocated / {:>7} cost  {source}",
                m.held, estimate.memory, m.allocated, estimate.cost
            );
        }
        if m.held > estimate.memory + HELD_SLACK {
            return Err(format!(
                "{source}: held {} bytes, estimated {}",
                m.held, estimate.memory
            ));
        }
        let allowed = (estimate.cost + 64) * ALLOCATED_PER_UNIT;
        if m.allocated > allowed {
            return Err(format!(
                "{source}: allocated {} bytes, estimated work {} allows {allowed}",
                m.allocated, estimate.cost
            ));
        }
    }
    Ok(true)
}

const ATTACKS: &[&str] = &[
    "object.a + object.b != ''",
    "[object.a].map(a, a + a).map(a, a + a).map(a, a + a)[0] != ''",
    "object.l.map(x, x + x).size() > 0",
    "object.l.map(x, [x, x, x]).map(y, y + y).size() > 0",
    "object.l.filter(x, x in object.l).size() >= 0",
    "object.l.all(a, object.l.exists(b, a == b))",
    "object.l == object.l + object.l",
    "object.l.exists_one(x, x == object.a)",
    "object.m.all(k, k in object.m && object.m[k] != '')",
    "object.spec.containers.all(c, c.image.contains('x') || c.name.matches('^[a-z]+[0-9]*$'))",
    "object.spec.containers.map(c, c.image + c.image + c.name).all(s, s.size() > 0)",
    "size(object.a + object.a + object.a) > 0",
    "string(size(object.l)) + object.a != object.b",
    "[object.l, object.l, object.l].map(x, x + x).size() > 0",
    "object.l.map(x, object.l).map(y, y + y).size() > 0",
];

#[test]
fn evaluations_stay_within_their_estimate() {
    let limits = limits();
    let inputs = worst_inputs(&limits);
    let mut compiled = 0;
    for source in ATTACKS {
        compiled += usize::from(check(source, &limits, &inputs).unwrap_or_else(|e| panic!("{e}")));
    }
    assert!(
        compiled >= ATTACKS.len() - 3,
        "the attacks must mostly compile under these limits to be measured ({compiled})"
    );
    // The longest doubling chain the budget admits is measured like the rest (it holds
    // megabytes), the next one does not compile.
    let chain = |n: usize| "[object.a]".to_string() + &".map(a, a + a)".repeat(n) + ".size() > 0";
    let longest = (1..40)
        .take_while(|n| check(&chain(*n), &limits, &inputs).unwrap_or_else(|e| panic!("{e}")))
        .last()
        .expect("one doubling compiles");
    assert!((4..30).contains(&longest), "{longest} doublings compiled");
    // The doubling chain that took every replica down: refused at compile time.
    let chain = "[object.a]".to_string() + &".map(a, a + a)".repeat(20) + ".size() > 0";
    let err = Expression::compile(&chain, Scope::Admission, Expect::Bool, &Limits::default())
        .expect_err("twenty doublings must not compile");
    assert!(
        err.message.contains("per-expression budget"),
        "{}",
        err.message
    );

    // The fuzz target: generated expressions either fail to compile or stay within their bound.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(300);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let measured = std::sync::atomic::AtomicU32::new(0);
    let result = runner.run(&expression(), |source| {
        let compiled = check(&source, &limits, &inputs).map_err(TestCaseError::fail)?;
        measured.fetch_add(u32::from(compiled), std::sync::atomic::Ordering::Relaxed);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let measured = measured.into_inner();
    assert!(
        measured * 5 >= cases,
        "only {measured} of {cases} generated expressions compiled: the generator must produce \
         expressions worth measuring"
    );
}

/// Expressions over the inputs' fields, with comprehensions binding `v`.
fn expression() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("object.a".to_string()),
        Just("object.b".to_string()),
        Just("object.l".to_string()),
        Just("object.m".to_string()),
        Just("object.spec.containers".to_string()),
        Just("v".to_string()),
        Just("'x'".to_string()),
        Just("1".to_string()),
        Just("[]".to_string()),
    ];
    let tree = leaf.prop_recursive(5, 48, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} + {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("[{a}, {b}]")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a}.map(v, {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a}.filter(v, {b} == {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("[{a}.all(v, {b} in {a})]")),
            (inner.clone(), inner.clone())
                .prop_map(|(a, b)| format!("[{a}.exists(v, {a} == {b})]")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("[{a}.contains({b})]")),
            inner.clone().prop_map(|a| format!("[size({a})]")),
            inner.clone().prop_map(|a| format!("{a}[0]")),
            inner
                .clone()
                .prop_map(|a| format!("[{a}.matches('^x+.*$')]")),
            (inner.clone(), inner.clone(), inner)
                .prop_map(|(c, a, b)| format!("({c} == {c} ? {a} : {b})")),
        ]
    });
    tree.prop_map(|e| format!("size({e}) >= 0"))
}
