//! Compilation of the three resources into a [`PolicySet`]. Each object compiles on its own:
//! an object with errors is left out of the set and reported with every error (field and
//! position), so one broken policy never takes the others down.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::ResourceExt;
use phantom_crds::{
    AttestationRequirement, CompileError, PhantomPolicy, PluginRef, Position, SecretBinding,
};
use serde_json::Value;

use crate::expr::{Expression, Limits};
use crate::wasm::{PluginHost, PluginLimits, PluginModule};

mod binding;
mod digest;
mod errors;
mod index;
mod key_release;
mod policy;
mod requirement;

pub(crate) use key_release::{CompiledKeyRelease, ReleaseRules, compile_plan};

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

/// A named `spec.match.matchConditions` entry.
#[derive(Debug, Clone)]
pub(crate) struct MatchCondition {
    pub name: String,
    pub expr: Expression,
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledPolicy {
    pub name: String,
    pub object: PhantomPolicy,
    pub match_conditions: Vec<MatchCondition>,
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
    /// `policies` by namespace selector (positions in `policies`).
    pub by_namespace: index::NamespaceIndex,
    pub bindings: Vec<SecretBinding>,
    pub requirements: BTreeMap<String, CompiledRequirement>,
    pub limits: Limits,
    pub host: PluginHost,
}

impl Inner {
    /// The policies a namespace with `labels` may match (see [`index::NamespaceIndex`]), in set
    /// order; their selectors are still to be checked.
    pub fn namespace_candidates(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> impl Iterator<Item = &CompiledPolicy> {
        self.by_namespace
            .candidates(labels)
            .into_iter()
            .map(|position| &self.policies[position])
    }

    /// The compiled policy `name`, found by binary search: policies are compiled in name order,
    /// so a decision looks up the few it matched without indexing every policy of the set.
    pub fn policy(&self, name: &str) -> Option<&CompiledPolicy> {
        self.policies
            .binary_search_by(|p| p.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.policies[i])
    }
}

/// The objects to compile.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub policies: Vec<PhantomPolicy>,
    pub bindings: Vec<SecretBinding>,
    pub requirements: Vec<AttestationRequirement>,
    /// Objects the API server holds that do not read as their type (they passed the CRD schema,
    /// or got in while validation was off, but not Phantom's types). Never compiled: reported as
    /// errors, and their last good versions stay in force ([`crate::store::PolicyStore::update`]).
    pub unreadable: Vec<ObjectErrors>,
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
        sorted
            .unreadable
            .sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        digest::digest(&sorted)
    }
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
            match requirement::compile(r, &limits) {
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
            match binding::compile(b) {
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
            match policy::compile(p, &requirements, host, modules, &limits) {
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
        let by_namespace = index::NamespaceIndex::new(
            policies
                .iter()
                .map(|p| p.object.spec.match_.namespace_selector.as_ref()),
        );
        let inner = Inner {
            digest: digest::digest(&ok),
            policies,
            by_namespace,
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
