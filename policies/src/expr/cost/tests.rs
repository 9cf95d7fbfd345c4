use super::*;

fn priced(source: &str) -> Result<Estimate, Unpriced> {
    let program = cel::Program::compile(source).expect("parses");
    estimate(program.expression(), &Limits::default())
}

fn cost(source: &str) -> u64 {
    priced(source).expect("priced").cost
}

fn memory(source: &str) -> u64 {
    priced(source).expect("priced").memory
}

#[test]
fn concatenation_is_priced_by_what_it_copies() {
    // One `+` of two input strings copies up to both inputs' bytes.
    let limits = Limits::default();
    let one = memory("object.a + object.b");
    assert!(one >= 2 * limits.max_input_bytes, "{one}");
    // Chained doubling grows geometrically, in the estimate as in the interpreter.
    let doubled = memory("[object.a].map(a, a + a).map(a, a + a)");
    assert!(doubled >= 4 * limits.max_input_bytes, "{doubled}");
    let many = "[object.a]".to_string() + &".map(a, a + a)".repeat(40);
    assert!(memory(&many) > 1 << 60, "forty doublings must saturate");
}

#[test]
fn list_membership_and_equality_are_priced_by_size() {
    let scalar = cost("object.a == 1");
    let lists = cost("object.a == object.b");
    assert!(lists > scalar + 1000, "{scalar} vs {lists}");
    let membership = cost("'x' in object.list");
    assert!(membership > 1024 / TOUCHED_PER_UNIT, "{membership}");
}

#[test]
fn a_body_scanning_its_element_costs_one_scan_of_the_range() {
    let limits = Limits::default();
    let scan = cost("object.spec.containers.all(c, c.image.contains('x'))");
    // Per item: a few nodes; in total: one pass over the input.
    let pass = (limits.max_input_bytes + limits.max_input_values) / TOUCHED_PER_UNIT;
    assert!(scan >= pass, "{scan}");
    assert!(scan < 3 * pass + 64 * limits.max_collection_items, "{scan}");
}

#[test]
fn nested_comprehensions_multiply_iterations() {
    let one = cost("object.l.all(a, a != '')");
    let two = cost("object.l.all(a, object.l.all(b, a != b))");
    assert!(two > one * 500, "{one} vs {two}");
}

#[test]
fn building_a_list_counts_the_copies() {
    let limits = Limits::default();
    let mapped = priced("object.l.map(a, 1)").expect("priced");
    // Per item: the literal `[1]` built, copied in, and up to two accumulator slots.
    assert!(
        mapped.memory >= limits.max_collection_items * 2 * VALUE_BYTES,
        "{mapped:?}"
    );
    assert!(
        mapped.memory <= limits.max_collection_items * 8 * VALUE_BYTES,
        "{mapped:?}"
    );
    // Projecting the elements copies them: at most the whole range, once.
    let projected = priced("object.l.map(a, a)").expect("priced").memory;
    let whole = limits.max_input_values * VALUE_BYTES + limits.max_input_bytes;
    assert!(projected >= whole, "{projected}");
    assert!(projected <= 3 * whole, "{projected}");
}

#[test]
fn matches_needs_a_literal_pattern_that_compiles() {
    let err = priced("object.a.matches(object.b)").expect_err("pattern from the input");
    assert!(err.0.contains("string literal"), "{err:?}");
    let err = priced("object.a.matches('(')").expect_err("invalid pattern");
    assert!(err.0.contains("not a valid regular expression"), "{err:?}");
    let err = priced(r"object.a.matches('\\w{1000}\\w{1000}')").expect_err("huge program");
    assert!(err.0.contains("compiles to more than"), "{err:?}");
    let small = priced("object.a.matches('^[a-z]+$')").expect("small pattern");
    assert!(small.memory >= 2 * 1024 * 1024, "the DFA cache: {small:?}");
}

#[test]
fn functions_outside_the_standard_library_are_refused() {
    let err = priced("object.a.lowerAscii() == 'x'").expect_err("not in the stdlib");
    assert!(err.0.contains("lowerAscii()"), "{err:?}");
}

#[test]
fn linear_bounds_sum_over_elements() {
    let body = Linear::variable(1)
        .times(3)
        .plus(&Linear::variable(2))
        .plus_constant(10);
    let (values, bytes) = (Linear::constant(1000), Linear::constant(50));
    let total = body.summed_over(&[(1, &values), (2, &bytes)], 100);
    assert_eq!(total, Linear::constant(100 * 10 + 3 * 1000 + 50));
    let bigger = Linear::variable(2).max(&Linear::variable(1).times(2));
    assert_eq!(bigger.coefficient(1), 2);
    assert_eq!(bigger.coefficient(2), 1);
    assert_eq!(
        bigger.substitute(2, &Linear::constant(5)),
        Linear::variable(1).times(2).plus_constant(5)
    );
}

#[test]
fn string_concatenation_copies_bytes_not_values() {
    let limits = Limits::default();
    // A message built from pod fields: strings, whatever the fields could have been.
    let message = memory("'pod ' + object.metadata.name + ' in ' + object.metadata.namespace");
    assert!(message < 4 * limits.max_input_bytes + 4096, "{message}");
    // Two values of unknown kind may be lists: copied value by value.
    let lists = memory("object.a + object.b");
    assert!(lists > limits.max_input_values * VALUE_BYTES, "{lists}");
}
