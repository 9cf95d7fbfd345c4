//! The policy set a component enforces (the admission webhook, and the controller whose status
//! reports it), swapped atomically. Each object keeps its last version
//! that compiled: when an edit breaks a policy, the previous version stays in force (instead of
//! the policy vanishing, which would silently stop injecting or validating), and the snapshot says
//! which objects are held back and why.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use crate::wasm::PluginHost;
use crate::{ModuleResolver, ObjectErrors, PolicySet, Sources};
use kube::ResourceExt;
use phantom_crds::{AttestationRequirement, PhantomPolicy, SecretBinding};
use tokio::sync::watch;

/// One published version of the policy set.
#[derive(Debug)]
pub struct Snapshot {
    /// What is enforced.
    pub set: PolicySet,
    /// The objects `set` was compiled from (current versions, or last good ones when held back).
    pub sources: Sources,
    /// Compile errors of the objects' current versions.
    pub errors: Vec<ObjectErrors>,
    /// Objects (`Kind name`) whose current version failed and whose previous version is enforced.
    pub held_back: Vec<String>,
    /// Increments with every publication.
    pub generation: u64,
    /// Whether the watches delivered a complete initial list (before that, the webhook is not ready).
    pub synced: bool,
}

#[derive(Debug, Default)]
struct LastGood {
    policies: BTreeMap<String, PhantomPolicy>,
    bindings: BTreeMap<String, SecretBinding>,
    requirements: BTreeMap<String, AttestationRequirement>,
}

/// The current [`Snapshot`] and the last good version of every object.
#[derive(Debug)]
pub struct PolicyStore {
    host: PluginHost,
    current: RwLock<Arc<Snapshot>>,
    last_good: Mutex<LastGood>,
    published: watch::Sender<u64>,
}

fn binding_key(b: &SecretBinding) -> String {
    format!("{}/{}", b.namespace().unwrap_or_default(), b.name_any())
}

impl PolicyStore {
    /// An empty, not yet synced store evaluating plugins on `host`.
    pub fn new(host: PluginHost) -> Self {
        let (set, _) = PolicySet::compile(&Sources::default(), &host, &crate::Modules::default());
        let empty = Snapshot {
            set,
            sources: Sources::default(),
            errors: Vec::new(),
            held_back: Vec::new(),
            generation: 0,
            synced: false,
        };
        Self {
            host,
            current: RwLock::new(Arc::new(empty)),
            last_good: Mutex::default(),
            published: watch::channel(0).0,
        }
    }

    /// The plugin host shared by every compiled version.
    pub fn host(&self) -> &PluginHost {
        &self.host
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Notified with the generation of every publication.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// Remembers `sources` as last good versions (for objects not already known): a replica that
    /// starts while an object's current version is broken then still enforces the version the
    /// controller last published, instead of nothing. The next [`update`](Self::update) decides
    /// what stays: objects that no longer exist are forgotten there.
    pub fn remember(&self, sources: &Sources) {
        let mut last_good = self
            .last_good
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for p in &sources.policies {
            last_good
                .policies
                .entry(p.name_any())
                .or_insert_with(|| p.clone());
        }
        for b in &sources.bindings {
            last_good
                .bindings
                .entry(binding_key(b))
                .or_insert_with(|| b.clone());
        }
        for r in &sources.requirements {
            last_good
                .requirements
                .entry(r.name_any())
                .or_insert_with(|| r.clone());
        }
    }

    /// Compiles the objects' current versions and publishes the result; objects that fail are
    /// replaced by their last good version (or left out if they never compiled).
    pub fn update(
        &self,
        sources: &Sources,
        modules: &dyn ModuleResolver,
        synced: bool,
    ) -> Arc<Snapshot> {
        let mut last_good = self
            .last_good
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (first, errors) = PolicySet::compile(sources, &self.host, modules);
        let failed =
            |kind: &str, name: &str| errors.iter().any(|e| e.kind == kind && e.name == name);

        let mut held_back = Vec::new();
        let mut effective = Sources::default();
        for p in &sources.policies {
            let name = p.name_any();
            if !failed("PhantomPolicy", &name) {
                effective.policies.push(p.clone());
            } else if let Some(previous) = last_good.policies.get(&name) {
                effective.policies.push(previous.clone());
                held_back.push(format!("PhantomPolicy {name}"));
            }
        }
        for b in &sources.bindings {
            let key = binding_key(b);
            if !failed("SecretBinding", &key) {
                effective.bindings.push(b.clone());
            } else if let Some(previous) = last_good.bindings.get(&key) {
                effective.bindings.push(previous.clone());
                held_back.push(format!("SecretBinding {key}"));
            }
        }
        for r in &sources.requirements {
            let name = r.name_any();
            if !failed("AttestationRequirement", &name) {
                effective.requirements.push(r.clone());
            } else if let Some(previous) = last_good.requirements.get(&name) {
                effective.requirements.push(previous.clone());
                held_back.push(format!("AttestationRequirement {name}"));
            }
        }

        for unreadable in &sources.unreadable {
            let name = unreadable.name.as_str();
            let kept = match unreadable.kind {
                "PhantomPolicy" => last_good
                    .policies
                    .get(name)
                    .cloned()
                    .map(|p| effective.policies.push(p)),
                "SecretBinding" => last_good
                    .bindings
                    .get(name)
                    .cloned()
                    .map(|b| effective.bindings.push(b)),
                "AttestationRequirement" => last_good
                    .requirements
                    .get(name)
                    .cloned()
                    .map(|r| effective.requirements.push(r)),
                _ => None,
            };
            if kept.is_some() {
                held_back.push(format!("{} {name}", unreadable.kind));
            }
        }
        let mut errors = errors;
        errors.extend(sources.unreadable.iter().cloned());

        // A previous version may no longer compile on its own (say its plugin's ConfigMap is
        // gone); it is then left out too, and its errors are reported.
        let (set, still_failing) = if errors.is_empty() {
            (first, Vec::new())
        } else {
            PolicySet::compile(&effective, &self.host, modules)
        };
        let broken = |kind: &str, name: &str| {
            still_failing
                .iter()
                .any(|e| e.kind == kind && e.name == name)
        };
        last_good.policies = effective
            .policies
            .iter()
            .filter(|p| !broken("PhantomPolicy", &p.name_any()))
            .cloned()
            .map(|p| (p.name_any(), p))
            .collect();
        last_good.bindings = effective
            .bindings
            .iter()
            .filter(|b| !broken("SecretBinding", &binding_key(b)))
            .cloned()
            .map(|b| (binding_key(&b), b))
            .collect();
        last_good.requirements = effective
            .requirements
            .iter()
            .filter(|r| !broken("AttestationRequirement", &r.name_any()))
            .cloned()
            .map(|r| (r.name_any(), r))
            .collect();
        for e in still_failing {
            if !errors.iter().any(|a| a.kind == e.kind && a.name == e.name) {
                errors.push(e);
            }
        }
        errors.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));

        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let snapshot = Arc::new(Snapshot {
            set,
            sources: effective,
            errors,
            held_back,
            generation: current.generation + 1,
            synced,
        });
        *current = snapshot.clone();
        self.published.send_replace(snapshot.generation);
        snapshot
    }
}

#[cfg(test)]
mod tests {
    use crate::Modules;
    use phantom_crds::CompileError;

    use super::*;

    fn policy(name: &str, expression: &str) -> PhantomPolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "phantom.dev/v1alpha1", "kind": "PhantomPolicy",
            "metadata": {"name": name},
            "spec": {"rules": {"validations": [{"name": "r", "expression": expression}]}}
        }))
        .expect("policy")
    }

    #[test]
    fn a_broken_edit_keeps_the_previous_version_in_force() {
        let store = PolicyStore::new(PluginHost::new().expect("host"));
        let modules = Modules::default();
        let v1 = Sources {
            policies: vec![policy("a", "true"), policy("b", "true")],
            ..Default::default()
        };
        let good = store.update(&v1, &modules, true);
        assert!(good.errors.is_empty() && good.held_back.is_empty());
        assert_eq!(good.set.policy_names(), ["a", "b"]);

        let v2 = Sources {
            policies: vec![policy("a", "object.spec.("), policy("b", "false")],
            ..Default::default()
        };
        let held = store.update(&v2, &modules, true);
        assert_eq!(held.held_back, ["PhantomPolicy a"]);
        assert_eq!(held.errors.len(), 1, "{:?}", held.errors);
        assert_eq!(held.set.policy_names(), ["a", "b"], "a is still enforced");
        assert_ne!(
            held.set.digest(),
            good.set.digest(),
            "b's new version is in force"
        );

        // A policy that never compiled is simply absent; a deleted one is forgotten.
        let v3 = Sources {
            policies: vec![policy("c", "object.(")],
            ..Default::default()
        };
        let after = store.update(&v3, &modules, true);
        assert!(after.set.policy_names().is_empty());
        assert!(after.held_back.is_empty());
        assert_eq!(after.generation, 3);
        assert_eq!(*store.subscribe().borrow(), 3);
    }

    #[test]
    fn an_unreadable_object_is_reported_and_its_last_good_version_stays_in_force() {
        let store = PolicyStore::new(PluginHost::new().expect("host"));
        let modules = Modules::default();
        let good = Sources {
            policies: vec![policy("a", "true"), policy("b", "true")],
            ..Default::default()
        };
        store.update(&good, &modules, true);
        let unreadable = |name: &str| ObjectErrors {
            kind: "PhantomPolicy",
            name: name.into(),
            errors: vec![CompileError {
                field: "spec.enforcement".into(),
                message: "unknown variant `sometimes`".into(),
                position: None,
            }],
        };
        let now = Sources {
            policies: vec![policy("b", "true")],
            unreadable: vec![unreadable("a"), unreadable("never-read")],
            ..Default::default()
        };
        let snapshot = store.update(&now, &modules, true);
        assert_eq!(
            snapshot.set.policy_names(),
            ["a", "b"],
            "a's last good version"
        );
        assert_eq!(snapshot.held_back, ["PhantomPolicy a"]);
        let reported: Vec<&str> = snapshot.errors.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(reported, ["a", "never-read"]);
        assert_ne!(
            now.digest(),
            Sources {
                policies: vec![policy("b", "true")],
                ..Default::default()
            }
            .digest(),
            "an unreadable object changes what is compiled"
        );
    }

    #[test]
    fn a_new_replica_enforces_the_remembered_version_of_a_broken_object() {
        let modules = Modules::default();
        let published = Sources {
            policies: vec![policy("a", "true")],
            ..Default::default()
        };
        let store = PolicyStore::new(PluginHost::new().expect("host"));
        store.remember(&published);
        let broken = Sources {
            policies: vec![policy("a", "object.(")],
            ..Default::default()
        };
        let snapshot = store.update(&broken, &modules, true);
        assert_eq!(snapshot.set.policy_names(), ["a"]);
        assert_eq!(snapshot.held_back, ["PhantomPolicy a"]);

        // Remembered versions never override a current version that compiles.
        let fresh = PolicyStore::new(PluginHost::new().expect("host"));
        fresh.remember(&published);
        let current = Sources {
            policies: vec![policy("a", "false")],
            ..Default::default()
        };
        let snapshot = fresh.update(&current, &modules, true);
        assert!(snapshot.held_back.is_empty());
        assert_eq!(snapshot.sources.policies[0].spec, current.policies[0].spec);
    }
}
