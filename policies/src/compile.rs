//! Compilation of the three resources into a [`PolicySet`]. Each object compiles on its own:
//! an object with errors is left out of the set and reported with every error (field and
//! position), so one broken policy never takes the others down.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kube::ResourceExt;
use phantom_crds::{
    AttestationRequirement, CelRule, CompileError, DeliveryKind, Engine, KeyRelease,
    KeyReleasePlan, PhantomPolicy, PluginRef, Position, SecretBinding, TeeType,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::expr::{Expect, Expression, ExpressionError, Limits, Scope};
use crate::selector;
use crate::wasm::{PluginHost, PluginLimits, PluginModule};

/// Where plugin modules' bytes come from: a ConfigMap's `binaryData` (fetched by the caller) or a
/// file path (tests and `phantomctl`).
pub trait ModuleResolver {
    /// The module bytes of `plugin` of `policy`, or a message saying why they are unavailable.
    fn resolve(&self, policy: &str, plugin: &PluginRef) -> Result<Vec<u8>, String>;
}

/// Resolves `module.path` from the file system and `module.configMap` from a map the caller
/// filled from the API (`namespace/name/key` → bytes).
#[derive(Debug, Default, Clone)]
pub struct Modules {
    pub config_maps: BTreeMap<String, Vec<u8>>,
    /// Relative `module.path`s are resolved against this directory.
    pub base_dir: Option<std::path::PathBuf>,
}

impl ModuleResolver for Modules {
    fn resolve(&self, _policy: &str, plugin: &PluginRef) -> Result<Vec<u8>, String> {
        match (&plugin.module.config_map, &plugin.module.path) {
            (Some(cm), None) => {
                let id = format!("{}/{}/{}", cm.namespace, cm.name, cm.key);
                self.config_maps.get(&id).cloned().ok_or_else(|| {
                    format!(
                        "ConfigMap {}/{} has no binaryData key {}",
                        cm.namespace, cm.name, cm.key
                    )
                })
            }
            (None, Some(path)) => {
                let path = match &self.base_dir {
                    Some(base) if std::path::Path::new(path).is_relative() => base.join(path),
                    _ => path.into(),
                };
                std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))
            }
            _ => Err("set exactly one of module.configMap and module.path".into()),
        }
    }
}

/// The errors of one object that did not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectErrors {
    pub kind: &'static str,
    /// `name` or `namespace/name`.
    pub name: String,
    pub errors: Vec<CompileError>,
}

impl std::fmt::Display for ObjectErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for e in &self.errors {
            write!(f, "{} {}: {}: {}", self.kind, self.name, e.field, e.message)?;
            if let Some(Position { line, column }) = &e.position {
                write!(f, " (line {line}, column {column})")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub name: String,
    pub expr: Expression,
    pub message: Option<String>,
    pub message_expr: Option<Expression>,
}

#[derive(Debug, Clone)]
pub(crate) struct Plugin {
    pub name: String,
    pub module: PluginModule,
    pub settings: Value,
    pub limits: PluginLimits,
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledPolicy {
    pub name: String,
    pub object: PhantomPolicy,
    pub match_conditions: Vec<(String, Expression)>,
    pub validations: Vec<Rule>,
    pub canary_key: Option<Expression>,
    pub plugins: Vec<Plugin>,
    pub key_release: Vec<Rule>,
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledRequirement {
    pub object: AttestationRequirement,
    pub conditions: Vec<Rule>,
}

/// The compiled, immutable set every component enforces. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct PolicySet {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub digest: String,
    pub policies: Vec<CompiledPolicy>,
    pub bindings: Vec<SecretBinding>,
    pub requirements: BTreeMap<String, CompiledRequirement>,
    pub limits: Limits,
    pub host: PluginHost,
}

/// The objects to compile.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub policies: Vec<PhantomPolicy>,
    pub bindings: Vec<SecretBinding>,
    pub requirements: Vec<AttestationRequirement>,
}

impl Sources {
    /// `sha256:` over every object's kind, name and spec (status and metadata changes leave it
    /// alone): equal digests compile to the same set.
    pub fn digest(&self) -> String {
        let mut sorted = self.clone();
        sorted.policies.sort_by_key(|p| p.name_any());
        sorted.requirements.sort_by_key(|r| r.name_any());
        sorted
            .bindings
            .sort_by_key(|b| (b.namespace(), b.name_any()));
        digest(&sorted)
    }
}

struct Errors(Vec<CompileError>);

impl Errors {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(CompileError {
            field: field.into(),
            message: message.into(),
            position: None,
        });
    }

    fn expr(
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

    fn rules(
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
}

fn compile_requirement(
    r: &AttestationRequirement,
    limits: &Limits,
) -> Result<CompiledRequirement, Vec<CompileError>> {
    let mut errors = Errors(Vec::new());
    let spec = &r.spec;
    if spec.tee_types.contains(&TeeType::SevSnp) && spec.sev_snp.is_none() {
        errors.push("spec.sevSnp", "teeTypes accepts sev-snp, so spec.sevSnp must say which measurements and TCB are accepted");
    }
    if spec.tee_types.contains(&TeeType::Tdx) && spec.tdx.is_none() {
        errors.push(
            "spec.tdx",
            "teeTypes accepts tdx, so spec.tdx must say which MRTD and TCB statuses are accepted",
        );
    }
    if let Some(openbao) = &spec.openbao {
        for (i, endpoint) in openbao.pinned_endpoints.iter().enumerate() {
            if !openbao.allowed_jurisdictions.is_empty()
                && !openbao
                    .allowed_jurisdictions
                    .contains(&endpoint.jurisdiction)
            {
                errors.push(
                    format!("spec.openbao.pinnedEndpoints[{i}].jurisdiction"),
                    format!(
                        "{} is not in allowedJurisdictions; the endpoint could never be used",
                        endpoint.jurisdiction.0
                    ),
                );
            }
        }
    }
    let conditions = errors.rules(
        "spec.conditions",
        &spec.conditions,
        Scope::Attestation,
        limits,
    );
    if errors.0.is_empty() {
        Ok(CompiledRequirement {
            object: r.clone(),
            conditions,
        })
    } else {
        Err(errors.0)
    }
}

fn compile_binding(b: &SecretBinding) -> Result<(), Vec<CompileError>> {
    let mut errors = Errors(Vec::new());
    let spec = &b.spec;
    if spec.selector.pod_selector.is_none() && spec.selector.service_account_name.is_none() {
        errors.push(
            "spec.selector",
            "name a serviceAccountName and/or a podSelector (use `podSelector: {}` to mean every pod of the namespace)",
        );
    }
    if let Some(sel) = &spec.selector.pod_selector
        && let Err(e) = selector::validate(sel)
    {
        errors.push("spec.selector.podSelector", e);
    }
    let (mut names, mut envs, mut files) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for (i, secret) in spec.secrets.iter().enumerate() {
        let at = format!("spec.secrets[{i}]");
        if !names.insert(secret.name.as_str()) {
            errors.push(
                format!("{at}.name"),
                format!("duplicate secret name {:?}", secret.name),
            );
        }
        if secret.engine == Engine::Dynamic && secret.version.is_some() {
            errors.push(
                format!("{at}.version"),
                "only kv-v2 secrets have versions; remove version for a dynamic engine",
            );
        }
        for (j, d) in secret.delivery.iter().enumerate() {
            let at = format!("{at}.delivery[{j}]");
            match d.kind {
                DeliveryKind::Env => {
                    match &d.name {
                        None => errors.push(
                            format!("{at}.name"),
                            "kind env needs name: the environment variable to set",
                        ),
                        Some(n) if !envs.insert(n.clone()) => errors.push(
                            format!("{at}.name"),
                            format!("environment variable {n} is delivered twice"),
                        ),
                        Some(_) => {}
                    }
                    if secret.key.is_none() {
                        errors.push(
                            format!("{at}.kind"),
                            "an environment variable holds one value: set the secret's key",
                        );
                    }
                }
                DeliveryKind::File => match &d.path {
                    None => errors.push(
                        format!("{at}.path"),
                        "kind file needs path, relative to the secrets volume",
                    ),
                    Some(p) if p.split('/').any(|s| s == "..") => {
                        errors.push(format!("{at}.path"), "the path may not contain '..'")
                    }
                    Some(p) if !files.insert(p.clone()) => {
                        errors.push(format!("{at}.path"), format!("file {p} is delivered twice"))
                    }
                    Some(_) => {}
                },
                DeliveryKind::Socket => {
                    if d.name.is_some() || d.path.is_some() {
                        errors.push(at, "kind socket takes neither name nor path");
                    }
                }
            }
        }
    }
    if errors.0.is_empty() {
        Ok(())
    } else {
        Err(errors.0)
    }
}

fn compile_policy(
    p: &PhantomPolicy,
    requirements: &BTreeMap<String, CompiledRequirement>,
    host: &PluginHost,
    modules: &dyn ModuleResolver,
    limits: &Limits,
) -> Result<CompiledPolicy, Vec<CompileError>> {
    let name = p.name_any();
    let spec = &p.spec;
    let mut errors = Errors(Vec::new());
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
            match_conditions.push((c.name.clone(), e));
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
        .map(|kr| compile_key_release(&mut errors, kr, requirements, limits))
        .unwrap_or_default();
    let total: u64 = match_conditions
        .iter()
        .map(|(_, e)| e.estimated_cost())
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
    if !errors.0.is_empty() {
        return Err(errors.0);
    }
    Ok(CompiledPolicy {
        name,
        object: p.clone(),
        match_conditions,
        validations,
        canary_key,
        plugins,
        key_release,
    })
}

/// `spec.keyRelease` of a policy: its conditions, and a check that the requirement it names
/// compiled. Shared by [`PolicySet`] and the sidecar's [`crate::KeyReleaseSet`].
fn compile_key_release(
    errors: &mut Errors,
    kr: &KeyRelease,
    requirements: &BTreeMap<String, CompiledRequirement>,
    limits: &Limits,
) -> Vec<Rule> {
    let rules = errors.rules(
        "spec.keyRelease.conditions",
        &kr.conditions,
        Scope::KeyRelease,
        limits,
    );
    if let Some(r) = &kr.attestation_requirement_ref
        && !requirements.contains_key(&r.name)
    {
        errors.push(
            "spec.keyRelease.attestationRequirementRef.name",
            format!(
                "AttestationRequirement {} does not exist or does not compile",
                r.name
            ),
        );
    }
    rules
}

/// One policy's compiled key-release part: its name, its conditions and the requirement it names.
pub(crate) type ReleaseRules = (String, Vec<Rule>, Option<String>);

/// A key-release plan, compiled: the policies' parts and the requirements they name.
pub(crate) type CompiledKeyRelease = (Vec<ReleaseRules>, BTreeMap<String, CompiledRequirement>);

/// Compiles a sidecar's key-release plan: the requirements, then each policy's conditions.
pub(crate) fn compile_key_release_plan(
    plan: &KeyReleasePlan,
    limits: &Limits,
) -> Result<CompiledKeyRelease, Vec<ObjectErrors>> {
    let mut report = Vec::new();
    let mut requirements = BTreeMap::new();
    for r in &plan.requirements {
        let object = AttestationRequirement::new(&r.name, r.spec.clone());
        match compile_requirement(&object, limits) {
            Ok(c) => {
                requirements.insert(r.name.clone(), c);
            }
            Err(errors) => report.push(ObjectErrors {
                kind: "AttestationRequirement",
                name: r.name.clone(),
                errors,
            }),
        }
    }
    let mut policies = Vec::new();
    for p in &plan.policies {
        let mut errors = Errors(Vec::new());
        let rules = compile_key_release(&mut errors, &p.key_release, &requirements, limits);
        if errors.0.is_empty() {
            let requirement = p
                .key_release
                .attestation_requirement_ref
                .as_ref()
                .map(|r| r.name.clone());
            policies.push((p.name.clone(), rules, requirement));
        } else {
            report.push(ObjectErrors {
                kind: "PhantomPolicy",
                name: p.name.clone(),
                errors: errors.0,
            });
        }
    }
    if report.is_empty() {
        Ok((policies, requirements))
    } else {
        Err(report)
    }
}

fn digest(sources: &Sources) -> String {
    let mut hasher = Sha256::new();
    let mut add = |kind: &str, id: String, spec: Value| {
        hasher.update(kind.as_bytes());
        hasher.update([0]);
        hasher.update(id.as_bytes());
        hasher.update([0]);
        hasher.update(spec.to_string().as_bytes());
        hasher.update([0]);
    };
    for p in &sources.policies {
        add(
            "PhantomPolicy",
            p.name_any(),
            serde_json::to_value(&p.spec).unwrap_or_default(),
        );
    }
    for b in &sources.bindings {
        add(
            "SecretBinding",
            format!("{}/{}", b.namespace().unwrap_or_default(), b.name_any()),
            serde_json::to_value(&b.spec).unwrap_or_default(),
        );
    }
    for r in &sources.requirements {
        add(
            "AttestationRequirement",
            r.name_any(),
            serde_json::to_value(&r.spec).unwrap_or_default(),
        );
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

impl PolicySet {
    /// Compiles `sources` with the default [`Limits`]; returns the set of everything that
    /// compiled and the errors of everything that did not.
    pub fn compile(
        sources: &Sources,
        host: &PluginHost,
        modules: &dyn ModuleResolver,
    ) -> (Self, Vec<ObjectErrors>) {
        Self::compile_with(sources, host, modules, Limits::default())
    }

    /// [`PolicySet::compile`] with explicit limits.
    pub fn compile_with(
        sources: &Sources,
        host: &PluginHost,
        modules: &dyn ModuleResolver,
        limits: Limits,
    ) -> (Self, Vec<ObjectErrors>) {
        let mut report = Vec::new();
        let mut ok = Sources::default();
        let mut requirements = BTreeMap::new();
        let mut sorted = sources.clone();
        sorted.policies.sort_by_key(|p| p.name_any());
        sorted.requirements.sort_by_key(|r| r.name_any());
        sorted
            .bindings
            .sort_by_key(|b| (b.namespace(), b.name_any()));

        for r in &sorted.requirements {
            match compile_requirement(r, &limits) {
                Ok(c) => {
                    requirements.insert(r.name_any(), c);
                    ok.requirements.push(r.clone());
                }
                Err(errors) => report.push(ObjectErrors {
                    kind: "AttestationRequirement",
                    name: r.name_any(),
                    errors,
                }),
            }
        }
        let mut bindings = Vec::new();
        for b in &sorted.bindings {
            match compile_binding(b) {
                Ok(()) => {
                    bindings.push(b.clone());
                    ok.bindings.push(b.clone());
                }
                Err(errors) => report.push(ObjectErrors {
                    kind: "SecretBinding",
                    name: format!("{}/{}", b.namespace().unwrap_or_default(), b.name_any()),
                    errors,
                }),
            }
        }
        let mut policies = Vec::new();
        for p in &sorted.policies {
            match compile_policy(p, &requirements, host, modules, &limits) {
                Ok(c) => {
                    policies.push(c);
                    ok.policies.push(p.clone());
                }
                Err(errors) => report.push(ObjectErrors {
                    kind: "PhantomPolicy",
                    name: p.name_any(),
                    errors,
                }),
            }
        }
        let inner = Inner {
            digest: digest(&ok),
            policies,
            bindings,
            requirements,
            limits,
            host: host.clone(),
        };
        (
            Self {
                inner: Arc::new(inner),
            },
            report,
        )
    }

    /// Compiles `sources` and fails unless every object compiles (for offline tools and CI,
    /// where a partial set would hide a broken file).
    pub fn compile_all(
        sources: &Sources,
        host: &PluginHost,
        modules: &dyn ModuleResolver,
    ) -> crate::Result<Self> {
        let (set, errors) = Self::compile(sources, host, modules);
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(crate::Error::Compile(errors))
        }
    }

    /// `sha256:` digest of what this set enforces (the compiled objects' specs).
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }

    /// The plugin host the set evaluates on (compile a candidate on the same host to share its
    /// module cache).
    pub fn plugin_host(&self) -> &PluginHost {
        &self.inner.host
    }

    /// Names of the compiled policies, sorted.
    pub fn policy_names(&self) -> Vec<&str> {
        self.inner
            .policies
            .iter()
            .map(|p| p.name.as_str())
            .collect()
    }
}
