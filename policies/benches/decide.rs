//! Policy engine figures: one CEL rule, one warm plugin call, and `decide` over 1, 20 and 100
//! policies (the 20-policy set also runs 2 WASM plugins) and over 1,000 of which 20 match the
//! pod's namespace (with the 2 plugins); expressions near the cost budget against
//! the largest pod the input bounds admit, with their estimate and time per estimated unit.
//! Then a table of `decide`'s p50 over 1, 20, 100 and 1,000 policies × pods of 2, 20 and 100
//! containers, so the growth is seen. Prints percentiles; asserts nothing.
//!
//! `make plugins && cargo bench -p phantom-policies --bench decide`

use std::path::PathBuf;

use phantom_testkit::bench::{percentiles, time};

use phantom_crds::{PhantomPolicy, SecretBinding};
use phantom_policies::expr::{Expect, Expression, Limits, Scope, context};
use phantom_policies::wasm::{PluginHost, PluginLimits, module_digest};
use phantom_policies::{AdmissionInput, Modules, PolicySet, RequestInfo, Sources};
use serde_json::{Value, json};

/// Expressions near the budget, on a pod at the input bounds: 1,024 containers whose images fill
/// the 2 MiB of strings. How long a unit of the estimate takes says how pessimistic it is.
fn worst_cases(limits: &Limits) {
    let image = "r".repeat(1900);
    let containers: Vec<Value> = (0..1024)
        .map(|i| json!({"name": format!("c{i}"), "image": format!("{image}{i}")}))
        .collect();
    let object = json!({"spec": {"containers": containers}});
    phantom_policies::expr::check_input_bounds("object", &object, limits).expect("within bounds");
    let ctx = context(&[("object", &object)]).expect("context");
    for source in [
        "object.spec.containers.all(c, !c.image.contains('zzz'))",
        "object.spec.containers.all(c, c.image.matches('^r+[0-9]+$'))",
        "object.spec.containers.map(c, c.image).all(i, i.size() > 0)",
        "object.spec.containers.filter(c, c.image.endsWith('7')).size() > 0",
    ] {
        let e = Expression::compile(source, Scope::Admission, Expect::Bool, limits)
            .expect("within the budget");
        let samples = time(50, || drop(e.eval_bool(&ctx)));
        let estimate = e.estimate();
        let mut sorted = samples.clone();
        sorted.sort();
        let p50 = sorted[sorted.len() / 2];
        percentiles(&format!("CEL worst case: {} units", estimate.cost), samples);
        println!(
            "    {source}\n    estimated {} units, {} KiB; {:.1} ns per unit at p50",
            estimate.cost,
            estimate.memory / 1024,
            p50.as_nanos() as f64 / estimate.cost as f64
        );
    }
}

fn pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "web-5f7-abcde", "namespace": "shop", "generateName": "web-5f7-",
                        "labels": {"app": "web", "team": "shop", "pod-template-hash": "5f7"},
                        "ownerReferences": [{"kind": "ReplicaSet", "name": "web-5f7", "controller": true}]},
           "spec": {"serviceAccountName": "web", "containers": [
               {"name": "web", "image": "registry.example/web:1.4.2", "command": ["/web"], "env": [{"name": "MODE", "value": "prod"}],
                "securityContext": {"runAsNonRoot": true}},
               {"name": "log", "image": "registry.example/log:2.0", "command": ["/log"]}]}})
}

fn policy(i: usize, plugins: &[(String, String, String)]) -> PhantomPolicy {
    let plugins: Vec<Value> = plugins
        .iter()
        .map(|(name, sha, key)| json!({"name": name, "sha256": sha, "timeoutMs": 100,
            "module": {"configMap": {"namespace": "phantom-system", "name": "plugins", "key": key}}}))
        .collect();
    let template = include_str!("../tests/data/bench-policy.yaml");
    let mut policy: Value = serde_yaml::from_str(template).expect("bench-policy.yaml");
    policy["metadata"]["name"] = json!(format!("policy-{i:03}"));
    policy["spec"]["rules"]["plugins"] = json!(plugins);
    serde_json::from_value(policy).expect("policy")
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let object = pod();
    let limits = Limits::default();
    let rule = Expression::compile(
        "has(object.metadata.labels) && 'team' in object.metadata.labels",
        Scope::Admission,
        Expect::Bool,
        &limits,
    )
    .expect("rule");
    let ctx = context(&[("object", &object)]).expect("context");
    percentiles(
        "CEL: one typical rule (label check)",
        time(100_000, || assert!(rule.eval_bool(&ctx).expect("eval"))),
    );
    let all = Expression::compile(
        "object.spec.containers.all(c, !c.image.endsWith(':latest'))",
        Scope::Admission,
        Expect::Bool,
        &limits,
    )
    .expect("rule");
    percentiles(
        "CEL: comprehension over containers",
        time(100_000, || assert!(all.eval_bool(&ctx).expect("eval"))),
    );
    percentiles(
        "CEL: building the context from the pod",
        time(20_000, || drop(context(&[("object", &object)]))),
    );
    worst_cases(&limits);

    let host = PluginHost::new().expect("host");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let mut modules = Modules::default();
    let mut plugin_refs = Vec::new();
    for name in ["require_labels", "no_privileged"] {
        let path = target.join(format!(
            "wasm32-unknown-unknown/release/phantom_plugin_{name}.wasm"
        ));
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run `make plugins`)", path.display()));
        let key = format!("{name}.wasm");
        plugin_refs.push((name.replace('_', "-"), module_digest(&bytes), key.clone()));
        modules
            .config_maps
            .insert(format!("phantom-system/plugins/{key}"), bytes);
    }
    let trivial = wat::parse_file(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/allow.wat"))
        .expect("fixture");
    let trivial = host.load(&trivial, &module_digest(&trivial)).expect("load");
    let limits_p = PluginLimits {
        timeout_ms: 100,
        memory_mib: 16,
    };
    percentiles(
        "WASM: fresh instance of a trivial module (overhead)",
        time(5_000, || {
            assert!(
                host.evaluate(&trivial, b"{}", limits_p)
                    .expect("eval")
                    .allowed
            )
        }),
    );
    let bytes = modules.config_maps["phantom-system/plugins/require_labels.wasm"].clone();
    let module = host.load(&bytes, &module_digest(&bytes)).expect("load");
    let input = serde_json::to_vec(
        &json!({"request": {"object": object}, "settings": {"labels": ["team"]}}),
    )
    .expect("json");
    percentiles(
        "WASM: one warm plugin call (require-labels)",
        time(5_000, || {
            assert!(
                host.evaluate(&module, &input, limits_p)
                    .expect("eval")
                    .allowed
            )
        }),
    );

    let binding: SecretBinding = serde_json::from_value(json!({
        "apiVersion": "phantom.dev/v1alpha1", "kind": "SecretBinding", "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"serviceAccountName": "web"}, "openbao": {"role": "web"},
                 "secrets": [{"name": "db", "path": "shop/db", "key": "password", "delivery": [{"kind": "env", "name": "DB"}]}]}
    }))
    .expect("binding");
    let input = AdmissionInput {
        object: object.clone(),
        old_object: None,
        namespace_object: Some(
            json!({"metadata": {"name": "shop", "labels": {"phantom.dev/inject": "enabled"}}}),
        ),
        request: RequestInfo {
            operation: "CREATE".into(),
            namespace: "shop".into(),
            ..Default::default()
        },
    };
    // (policies, of which match the pod's namespace, with the 2 plugins). The 1,000-policy case
    // is a large cluster's set, most policies for other tenants' namespaces; it runs right after
    // the 20 + 2 case it is compared with (run after the 100-policy case, the same set measured
    // 1.3–1.7× slower: the machine's state, not the set).
    for (count, matching, with_plugins) in [
        (1, 1, false),
        (20, 20, false),
        (20, 20, true),
        (1_000, 20, true),
        (100, 100, false),
    ] {
        let policies = (0..count)
            .map(|i| {
                // The plugins sit on two of the policies, as a security team would add them.
                let plugins = if with_plugins && i < 2 {
                    &plugin_refs[i..=i]
                } else {
                    &[][..]
                };
                let mut policy = policy(i, plugins);
                if i >= matching {
                    policy.spec.match_.namespace_selector = Some(
                        serde_json::from_value(
                            json!({"matchLabels": {"tenant": format!("tenant-{i}")}}),
                        )
                        .expect("selector"),
                    );
                }
                policy
            })
            .collect();
        let (set, errors) = PolicySet::compile(
            &Sources {
                policies,
                bindings: vec![binding.clone()],
                ..Default::default()
            },
            &host,
            &modules,
        );
        assert!(errors.is_empty(), "{errors:?}");
        let of = if matching < count {
            format!(" ({matching} matching the namespace)")
        } else {
            String::new()
        };
        let label = format!(
            "decide: {count} policies{of}{}",
            if with_plugins {
                " + 2 WASM plugins"
            } else {
                ""
            }
        );
        let n = if matching == 100 { 2_000 } else { 10_000 };
        percentiles(&label, time(n, || assert!(set.decide(&input).inject)));
    }
    sweep(&host, &binding, &input);
}

/// How `decide` grows: every policy matching, pods of 2, 20 and 100 containers; p50 per cell.
fn sweep(host: &PluginHost, binding: &SecretBinding, input: &AdmissionInput) {
    let sizes = [2usize, 20, 100];
    println!("decide p50 by policies (all matching, no plugins) × containers in the pod:");
    println!(
        "  {:>9} | {}",
        "policies",
        sizes
            .iter()
            .map(|c| format!("{c:>10} containers"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    for count in [1usize, 20, 100, 1_000] {
        let (set, errors) = PolicySet::compile(
            &Sources {
                policies: (0..count).map(|i| policy(i, &[])).collect(),
                bindings: vec![binding.clone()],
                ..Default::default()
            },
            host,
            &Modules::default(),
        );
        assert!(errors.is_empty(), "{errors:?}");
        let cells: Vec<String> = sizes
            .iter()
            .map(|&containers| {
                let mut input = input.clone();
                input.object["spec"]["containers"] = json!((0..containers)
                    .map(|i| json!({"name": format!("c{i}"), "image": format!("registry.example/app-{i}:1.0"),
                                    "command": ["/app"]}))
                    .collect::<Vec<_>>());
                // About a second per cell, at least 20 samples.
                let once = time(3, || drop(set.decide(&input)))[0];
                let n = (1.0 / once.as_secs_f64().max(1e-6)).clamp(20.0, 5_000.0) as usize;
                let mut samples = time(n, || assert!(set.decide(&input).inject));
                samples.sort();
                format!("{:>21.2?}", samples[samples.len() / 2])
            })
            .collect();
        println!("  {count:>9} | {}", cells.join(" | "));
    }
}
