use serde_json::json;

use super::*;

fn compile(src: &str) -> Result<Expression, ExpressionError> {
    Expression::compile(src, Scope::Admission, Expect::Bool, &Limits::default())
}

fn pod() -> serde_json::Value {
    json!({"metadata": {"name": "web-1", "labels": {"team": "payments"}},
           "spec": {"containers": [{"name": "app", "image": "app:1"}, {"name": "log", "image": "log:2"}]}})
}

#[test]
fn evaluates_admission_expressions() {
    let object = pod();
    let ctx = context(&[("object", &object)]).expect("context");
    let e =
        compile("'team' in object.metadata.labels && object.spec.containers.all(c, c.image != '')")
            .expect("compiles");
    assert_eq!(e.eval_bool(&ctx), Ok(true));
    let e = compile("object.spec.containers.exists(c, c.name == 'sidecar')").expect("compiles");
    assert_eq!(e.eval_bool(&ctx), Ok(false));
}

#[test]
fn syntax_errors_carry_a_position() {
    let err = compile("object.metadata.labels[").expect_err("must not compile");
    assert!(err.position.is_some(), "{err:?}");
    let err = compile("true &&\n  )").expect_err("must not compile");
    assert_eq!(err.position.as_ref().map(|p| p.line), Some(2), "{err:?}");
}

#[test]
fn unknown_variables_are_compile_errors_with_their_position() {
    let err =
        compile("object.metadata.name == 'a' && secrets.size() > 0").expect_err("must not compile");
    assert!(
        err.message.contains("'secrets'") && err.message.contains("object, oldObject"),
        "{}",
        err.message
    );
    assert_eq!(
        err.position,
        Some(Position {
            line: 1,
            column: 32
        })
    );
    // Comprehension variables are not unknown.
    compile("object.spec.containers.all(c, c.name != '')")
        .expect("iteration variables are declared by the macro");
    // The key-release scope has other variables.
    let err = Expression::compile(
        "object.metadata.name == ''",
        Scope::KeyRelease,
        Expect::Bool,
        &Limits::default(),
    )
    .expect_err("object is not available to key release");
    assert!(
        err.message.contains("pod, binding, attestation"),
        "{}",
        err.message
    );
}

#[test]
fn obvious_type_errors_are_compile_errors() {
    let err = compile("'yes'").expect_err("a string is not a bool");
    assert!(
        err.message.contains("must evaluate to bool"),
        "{}",
        err.message
    );
    let err = compile("1 + 2").expect_err("an int is not a bool");
    assert!(err.message.contains("int"), "{}", err.message);
}

#[test]
fn wrong_runtime_types_are_reported_without_the_value() {
    let object = pod();
    let ctx = context(&[("object", &object)]).expect("context");
    let e = compile("object.metadata.name").expect("type depends on input");
    let err = e.eval_bool(&ctx).expect_err("a string is not a bool");
    assert_eq!(
        err,
        EvalError::WrongType {
            expected: "bool",
            got: "string"
        }
    );
    assert!(
        !err.to_string().contains("web-1"),
        "the error must not quote evaluated data: {err}"
    );
}

#[test]
fn missing_fields_are_evaluation_errors_not_panics() {
    let object = pod();
    let ctx = context(&[("object", &object)]).expect("context");
    let e = compile("object.spec.nodeName == 'x'").expect("compiles");
    assert!(matches!(e.eval_bool(&ctx), Err(EvalError::Failed(_))));
}

#[test]
fn nested_comprehensions_multiply_the_estimated_cost() {
    // Budgets follow the API server's (1M per expression, 10M per policy): one comprehension over
    // an input list fits, two nested ones over unbounded lists do not (as in Kubernetes, where
    // they need a maxItems).
    let one = compile("object.spec.containers.all(c, c.name != '')").expect("one level fits");
    assert!(
        one.estimated_cost() > 1024,
        "the body must be priced per item: {}",
        one.estimated_cost()
    );
    let err =
        compile("object.spec.containers.all(c, object.spec.containers.all(d, c.name != d.name))")
            .expect_err("two nested comprehensions exceed the budget");
    assert!(
        err.message.contains("per-expression budget"),
        "{}",
        err.message
    );
    let relaxed = Limits {
        max_collection_items: 16,
        ..Limits::default()
    };
    Expression::compile(
        "object.spec.containers.all(c, object.spec.containers.all(d, c.name != d.name))",
        Scope::Admission,
        Expect::Bool,
        &relaxed,
    )
    .expect("with small collections the same expression fits");
}

#[test]
fn oversized_inputs_are_refused_naming_the_path() {
    let limits = Limits {
        max_collection_items: 3,
        ..Limits::default()
    };
    let mut object = pod();
    object["spec"]["containers"] = json!([{}, {}, {}, {}]);
    let err =
        check_input_bounds("object", &object, &limits).expect_err("four containers exceed three");
    assert!(err.contains("object.spec.containers has 4 items"), "{err}");
    assert!(check_input_bounds("object", &pod(), &limits).is_ok());
}
