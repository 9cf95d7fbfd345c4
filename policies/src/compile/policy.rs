//! PhantomPolicy: selectors, match conditions, validations, the canary key, plugins (loaded
//! and pinned by sha256) and key-release conditions, within the per-policy cost budget.

use std::collections::{BTreeMap, BTreeSet};

use kube::ResourceExt;
use phantom_crds::{CompileError, PhantomPolicy};
use serde_json::Value;

use super::errors::Errors;
use super::{
    CompiledPolicy, CompiledRequirement, MatchCondition, ModuleResolver, Plugin, key_release,
};
use crate::expr::{Expect, Expression, Limits, Scope};
use crate::selector;
use crate::wasm::{PluginHost, PluginLimits};

/// Compiles one policy against the requirements that compiled.
pub(super) fn compile(
    p: &PhantomPolicy,
    requirements: &BTreeMap<String, CompiledRequirement>,
    host: &PluginHost,
    modules: &dyn ModuleResolver,
    limits: &Limits,
) -> Result<CompiledPolicy, Vec<CompileError>> {
    let name = p.name_any();
    let spec = &p.spec;
    let mut errors = Errors::default();
    for (field, sel) in [
        (
            "spec.match.namespaceSelector",
            &spec.match_.namespace_selector,
        ),
        ("spec.match.objectSelector", &spec.match_.object_selector),
    ] {
        if let Some(Err(e)) = sel.as_ref().map(selector::validate) {
            errors.push(field, e);
        }
    }
    let mut match_conditions = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, c) in spec.match_.match_conditions.iter().enumerate() {
        if !seen.insert(c.name.as_str()) {
            errors.push(
                format!("spec.match.matchConditions[{i}].name"),
                format!("duplicate condition name {:?}", c.name),
            );
        }
        if let Some(e) = errors.expr(
            format!("spec.match.matchConditions[{i}].expression"),
            &c.expression,
            Scope::Admission,
            Expect::Bool,
            limits,
        ) {
            match_conditions.push(MatchCondition {
                name: c.name.clone(),
                expr: e,
            });
        }
    }
    let validations = errors.rules(
        "spec.rules.validations",
        &spec.rules.validations,
        Scope::Admission,
        limits,
    );
    let canary_key = spec
        .injection
        .canary
        .as_ref()
        .and_then(|c| c.key.as_ref())
        .and_then(|k| {
            errors.expr(
                "spec.injection.canary.key".into(),
                k,
                Scope::Admission,
                Expect::String,
                limits,
            )
        });
    let mut plugins = Vec::new();
    let mut plugin_names = BTreeSet::new();
    for (i, plugin) in spec.rules.plugins.iter().enumerate() {
        let at = format!("spec.rules.plugins[{i}]");
        if !plugin_names.insert(plugin.name.as_str()) {
            errors.push(
                format!("{at}.name"),
                format!("duplicate plugin name {:?}", plugin.name),
            );
        }
        let module = modules
            .resolve(&name, plugin)
            .map_err(|e| (format!("{at}.module"), e))
            .and_then(|bytes| {
                host.load(&bytes, &plugin.sha256)
                    .map_err(|e| (format!("{at}.sha256"), e.to_string()))
            });
        match module {
            Ok(module) => plugins.push(Plugin {
                name: plugin.name.clone(),
                module,
                settings: plugin
                    .settings
                    .clone()
                    .unwrap_or(Value::Object(Default::default())),
                limits: PluginLimits {
                    timeout_ms: plugin.timeout_ms,
                    memory_mib: plugin.memory_limit_mib,
                },
            }),
            Err((field, message)) => errors.push(field, message),
        }
    }
    let key_release = spec
        .key_release
        .as_ref()
        .map(|kr| key_release::compile_conditions(&mut errors, kr, requirements, limits))
        .unwrap_or_default();
    let total: u64 = match_conditions
        .iter()
        .map(|c| c.expr.estimated_cost())
        .chain(
            validations
                .iter()
                .chain(&key_release)
                .map(|r| r.expr.estimated_cost()),
        )
        .chain(canary_key.iter().map(Expression::estimated_cost))
        .fold(0, u64::saturating_add);
    if total > limits.per_policy_cost {
        errors.push("spec", format!("the expressions' estimated worst-case cost {total} exceeds the per-policy budget of {}", limits.per_policy_cost));
    }
    errors.finish(CompiledPolicy {
        name,
        object: p.clone(),
        match_conditions,
        validations,
        canary_key,
        plugins,
        key_release,
    })
}
