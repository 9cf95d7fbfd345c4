//! `decide`: the admission question, answered from a compiled [`PolicySet`] alone.

use std::collections::{BTreeMap, BTreeSet};

use kube::ResourceExt;
use phantom_crds::{Detection, Enforcement, Injection};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::canary;
use crate::compile::{CompiledPolicy, PolicySet, Rule};
use crate::expr::{Expression, check_input_bounds, context};
use crate::input::{AdmissionInput, labels};
use crate::selector;

/// A reason a pod is (or, under `monitor`, would be) refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denial {
    pub policy: String,
    /// The rule, plugin or match condition that refused.
    pub rule: String,
    pub message: String,
}

/// The canary outcome of one policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryOutcome {
    pub percent: u8,
    pub key: String,
    pub bucket: u8,
    pub selected: bool,
}

/// What one matched policy said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyOutcome {
    pub policy: String,
    pub enforcement: Enforcement,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryOutcome>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denials: Vec<Denial>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Hints returned by plugins, by plugin name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hints: BTreeMap<String, Value>,
    /// A plugin that asked not to inject this pod (hint `{"inject": false}`), e.g. a rollout plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declined_by: Option<String>,
}

impl PolicyOutcome {
    /// Whether the policy applies to the pod: inside its canary and not declined by a plugin.
    fn selects_pod(&self) -> bool {
        self.canary.as_ref().is_none_or(|c| c.selected) && self.declined_by.is_none()
    }
}

/// A SecretBinding that applies to the pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BindingRef {
    pub namespace: String,
    pub name: String,
}

/// eBPF monitoring scope of the pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitoringScope {
    pub detections: BTreeSet<Detection>,
    /// The strongest action of the policies that protect the pod.
    #[serde(default)]
    pub action: phantom_crds::MonitoringAction,
    pub alert_labels: BTreeMap<String, String>,
}

impl MonitoringScope {
    /// Widens the scope by one policy's `monitoring`: its detections (all when it names none)
    /// and alert labels join, the stronger action wins.
    pub fn add(&mut self, monitoring: &phantom_crds::Monitoring) {
        self.detections.extend(
            monitoring
                .detections
                .clone()
                .unwrap_or_else(|| Detection::ALL.to_vec()),
        );
        self.alert_labels.extend(monitoring.alert_labels.clone());
        self.action = self.action.max(monitoring.action);
    }
}

/// The answer to an admission question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// `false` when an enforced policy refused the pod (the API server rejects it with `denials`).
    pub allowed: bool,
    /// Whether the pod gets Phantom injected.
    pub inject: bool,
    /// Injection settings of the deciding policy (the first enforced, in-canary policy by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injection: Option<Injection>,
    /// The policy whose injection settings apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deciding_policy: Option<String>,
    /// Every policy that matched the pod, enforced or monitored, in or out of its canary.
    pub matched: Vec<PolicyOutcome>,
    /// Refusals of enforced, in-canary policies.
    pub denials: Vec<Denial>,
    /// What `monitor` policies would have refused.
    pub would_deny: Vec<Denial>,
    /// Whether some `monitor` policy would have injected the pod.
    pub would_inject: bool,
    pub bindings: Vec<BindingRef>,
    pub monitoring: MonitoringScope,
    /// Policies whose key-release conditions the sidecar must check before releasing a value.
    pub key_release_policies: Vec<String>,
    pub warnings: Vec<String>,
    /// Digest of the policy set that decided.
    pub policy_digest: String,
}

/// An evaluation stopped at its deadline, between two expressions or plugins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interrupted {
    /// The policy that was being evaluated.
    pub policy: String,
}

impl PolicySet {
    /// Decides injection for one pod. Pure: no I/O besides running the policies' own CEL and WASM.
    /// Any evaluation failure of an enforced policy refuses the pod (fail closed).
    pub fn decide(&self, input: &AdmissionInput) -> Decision {
        match self.decide_within(input, None) {
            Ok(decision) => decision,
            Err(_) => unreachable!("no deadline, no interruption"),
        }
    }

    /// [`decide`](Self::decide) that stops at `deadline`: checked before every match condition,
    /// rule, canary key and plugin, so the work ends with the answer (within one expression,
    /// whose cost the compiler bounds, or one plugin, bounded by its own limits).
    pub fn decide_within(
        &self,
        input: &AdmissionInput,
        deadline: Option<std::time::Instant>,
    ) -> Result<Decision, Interrupted> {
        let expired = |policy: &str| match deadline {
            Some(d) if std::time::Instant::now() >= d => Err(Interrupted {
                policy: policy.to_owned(),
            }),
            _ => Ok(()),
        };
        let mut decision = Decision {
            allowed: true,
            inject: false,
            injection: None,
            deciding_policy: None,
            matched: Vec::new(),
            denials: Vec::new(),
            would_deny: Vec::new(),
            would_inject: false,
            bindings: Vec::new(),
            monitoring: MonitoringScope::default(),
            key_release_policies: Vec::new(),
            warnings: Vec::new(),
            policy_digest: self.digest().to_owned(),
        };
        let null = Value::Null;
        let old = input.old_object.as_ref().unwrap_or(&null);
        let ns_object = input.namespace_object.as_ref().unwrap_or(&null);
        let request = serde_json::to_value(&input.request).unwrap_or_default();
        let refuse = |decision: &mut Decision, message: String| {
            decision.allowed = false;
            decision.denials.push(Denial {
                policy: "-".into(),
                rule: "input".into(),
                message,
            });
        };
        for (name, value) in [
            ("object", &input.object),
            ("oldObject", old),
            ("namespaceObject", ns_object),
        ] {
            if let Err(e) = check_input_bounds(name, value, &self.inner.limits) {
                refuse(
                    &mut decision,
                    format!("the object is outside what Phantom's policies may evaluate: {e}"),
                );
                return Ok(decision);
            }
        }
        let ctx = match context(&[
            ("object", &input.object),
            ("oldObject", old),
            ("namespaceObject", ns_object),
            ("request", &request),
        ]) {
            Ok(ctx) => ctx,
            Err(e) => {
                refuse(&mut decision, e);
                return Ok(decision);
            }
        };
        let namespace = if input.request.namespace.is_empty() {
            input
                .object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        } else {
            input.request.namespace.clone()
        };
        let (pod_labels, ns_labels) = (labels(&input.object), labels(ns_object));
        let plugin_request = std::cell::OnceCell::new();
        let plugin_request = || {
            plugin_request.get_or_init(|| {
                json!({"object": input.object, "oldObject": old, "namespaceObject": ns_object, "request": request}).to_string()
            })
        };

        for policy in self.inner.namespace_candidates(&ns_labels) {
            let spec = &policy.object.spec;
            if !selector::matches(spec.match_.namespace_selector.as_ref(), &ns_labels)
                || !selector::matches(spec.match_.object_selector.as_ref(), &pod_labels)
            {
                continue;
            }
            let mut outcome = PolicyOutcome {
                policy: policy.name.clone(),
                enforcement: spec.enforcement,
                canary: None,
                denials: Vec::new(),
                warnings: Vec::new(),
                hints: BTreeMap::new(),
                declined_by: None,
            };
            expired(&policy.name)?;
            match match_conditions(policy, &ctx) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(denial) => {
                    outcome.denials.push(denial);
                    decision.matched.push(outcome);
                    continue;
                }
            }
            expired(&policy.name)?;
            if let Some(canary) = &spec.injection.canary {
                let key = match &policy.canary_key {
                    None => Ok(canary::default_key(&input.object, &namespace)),
                    Some(expr) => expr.eval_string(&ctx).map_err(|e| e.to_string()),
                };
                match key {
                    Ok(key) => {
                        let bucket = canary::bucket(&policy.name, &key);
                        let selected = bucket < canary.percent;
                        outcome.canary = Some(CanaryOutcome {
                            percent: canary.percent,
                            key,
                            bucket,
                            selected,
                        });
                    }
                    Err(e) => outcome.denials.push(Denial {
                        policy: policy.name.clone(),
                        rule: "canary.key".into(),
                        message: format!("the canary key expression failed: {e}"),
                    }),
                }
            }
            if outcome.selects_pod() && outcome.denials.is_empty() {
                for rule in &policy.validations {
                    expired(&policy.name)?;
                    if let Some(denial) = validate(policy, rule, &ctx) {
                        outcome.denials.push(denial);
                    }
                }
                if !policy.plugins.is_empty() {
                    expired(&policy.name)?;
                    self.run_plugins(policy, plugin_request().as_str(), &mut outcome);
                }
            }
            decision.matched.push(outcome);
        }

        self.aggregate(&mut decision, input, &namespace, &pod_labels);
        Ok(decision)
    }

    /// The canary key expressions that fail on `input`, as (policy, error) — for
    /// `phantomctl policy lint`, which asks about common pod shapes. Selectors and match
    /// conditions are not applied: a key must hold on every pod its policy could match, and a
    /// failing key refuses the pod.
    pub fn failing_canary_keys(&self, input: &AdmissionInput) -> Vec<(String, String)> {
        let null = Value::Null;
        let request = serde_json::to_value(&input.request).unwrap_or_default();
        let Ok(ctx) = context(&[
            ("object", &input.object),
            ("oldObject", input.old_object.as_ref().unwrap_or(&null)),
            (
                "namespaceObject",
                input.namespace_object.as_ref().unwrap_or(&null),
            ),
            ("request", &request),
        ]) else {
            return Vec::new();
        };
        self.inner
            .policies
            .iter()
            .filter_map(|policy| {
                let expr = policy.canary_key.as_ref()?;
                expr.eval_string(&ctx)
                    .err()
                    .map(|e| (policy.name.clone(), e.to_string()))
            })
            .collect()
    }

    fn run_plugins(
        &self,
        policy: &CompiledPolicy,
        request_json: &str,
        outcome: &mut PolicyOutcome,
    ) {
        for plugin in &policy.plugins {
            // The request is serialised once per decision; only the settings differ per plugin.
            let bytes = format!(
                r#"{{"request":{request_json},"settings":{}}}"#,
                plugin.settings
            )
            .into_bytes();
            match self
                .inner
                .host
                .evaluate(&plugin.module, &bytes, plugin.limits)
            {
                Ok(verdict) => {
                    outcome.warnings.extend(
                        verdict
                            .warnings
                            .iter()
                            .map(|w| format!("{}/{}: {w}", policy.name, plugin.name)),
                    );
                    if let Some(hints) = verdict.hints {
                        if hints.get("inject") == Some(&Value::Bool(false)) {
                            outcome
                                .declined_by
                                .get_or_insert_with(|| plugin.name.clone());
                        }
                        outcome.hints.insert(plugin.name.clone(), hints);
                    }
                    if !verdict.allowed {
                        outcome.denials.push(Denial {
                            policy: policy.name.clone(),
                            rule: plugin.name.clone(),
                            message: verdict
                                .message
                                .unwrap_or_else(|| format!("refused by plugin {}", plugin.name)),
                        });
                    }
                }
                Err(e) => outcome.denials.push(Denial {
                    policy: policy.name.clone(),
                    rule: plugin.name.clone(),
                    message: format!("plugin {} {e}; refusing (fail closed)", plugin.name),
                }),
            }
        }
    }

    fn aggregate(
        &self,
        decision: &mut Decision,
        input: &AdmissionInput,
        namespace: &str,
        pod_labels: &BTreeMap<String, String>,
    ) {
        let enforced: Vec<&PolicyOutcome> = decision
            .matched
            .iter()
            .filter(|o| o.enforcement == Enforcement::Enforce && o.selects_pod())
            .collect();
        for o in &decision.matched {
            let target = if o.enforcement == Enforcement::Enforce {
                &mut decision.denials
            } else {
                &mut decision.would_deny
            };
            target.extend(o.denials.iter().cloned());
            decision.warnings.extend(o.warnings.iter().cloned());
        }
        decision.would_inject = decision.matched.iter().any(|o| {
            o.enforcement == Enforcement::Monitor && o.selects_pod() && o.denials.is_empty()
        });
        decision.allowed = decision.denials.is_empty();

        let service_account = input
            .object
            .pointer("/spec/serviceAccountName")
            .and_then(Value::as_str)
            .unwrap_or("default");
        decision.bindings = self
            .inner
            .bindings
            .iter()
            .filter(|b| b.namespace().as_deref() == Some(namespace))
            .filter(|b| selector::binding_selects(&b.spec.selector, service_account, pod_labels))
            .map(|b| BindingRef {
                namespace: namespace.to_owned(),
                name: b.name_any(),
            })
            .collect();

        let Some(first) = enforced.first() else {
            return;
        };
        if !decision.allowed {
            return;
        }
        if decision.bindings.is_empty() {
            decision.warnings.push(format!(
                "policy {} selects this pod, but no SecretBinding in namespace {namespace} selects it (ServiceAccount {service_account}); nothing to inject",
                first.policy
            ));
            return;
        }
        // Every outcome names a policy of this set.
        let policy_of = |o: &PolicyOutcome| {
            self.inner
                .policy(&o.policy)
                .expect("a matched outcome names a compiled policy")
        };
        let deciding = policy_of(first);
        decision.inject = true;
        decision.injection = Some(deciding.object.spec.injection.clone());
        decision.deciding_policy = Some(deciding.name.clone());
        for o in &enforced[1..] {
            let mode = policy_of(o).object.spec.injection.mode;
            if mode != deciding.object.spec.injection.mode {
                decision.warnings.push(format!(
                    "policies {} and {} ask for different injection modes; {} decides (first by name)",
                    deciding.name, o.policy, deciding.name
                ));
            }
        }
        for o in &enforced {
            let policy = policy_of(o);
            if let Some(m) = policy.object.spec.monitoring.as_ref().filter(|m| m.enabled) {
                decision.monitoring.add(m);
            }
            if policy.object.spec.key_release.is_some() {
                decision.key_release_policies.push(policy.name.clone());
            }
        }
    }
}

fn match_conditions(policy: &CompiledPolicy, ctx: &cel::Context) -> Result<bool, Denial> {
    for crate::compile::MatchCondition { name, expr } in &policy.match_conditions {
        match expr.eval_bool(ctx) {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(e) => {
                return Err(Denial {
                    policy: policy.name.clone(),
                    rule: name.clone(),
                    message: format!(
                        "match condition {name} failed to evaluate: {e}; refusing (fail closed)"
                    ),
                });
            }
        }
    }
    Ok(true)
}

/// Evaluates one rule; `Some(message)` when it refuses (false, or failed to evaluate: fail closed).
pub(crate) fn rule_failure(rule: &Rule, ctx: &cel::Context) -> Option<String> {
    match rule.expr.eval_bool(ctx) {
        Ok(true) => None,
        Ok(false) => Some(rule_message(rule, ctx)),
        Err(e) => Some(format!(
            "rule {} failed to evaluate: {e}; refusing (fail closed)",
            rule.name
        )),
    }
}

fn validate(policy: &CompiledPolicy, rule: &Rule, ctx: &cel::Context) -> Option<Denial> {
    rule_failure(rule, ctx).map(|message| Denial {
        policy: policy.name.clone(),
        rule: rule.name.clone(),
        message,
    })
}

/// The message of a failed rule: messageExpression, then message, then the expression itself.
fn rule_message(rule: &Rule, ctx: &cel::Context) -> String {
    rule.message_expr
        .as_ref()
        .and_then(|m: &Expression| m.eval_string(ctx).ok())
        .or_else(|| rule.message.clone())
        .unwrap_or_else(|| format!("failed rule {}: {}", rule.name, rule.expr.source()))
}
