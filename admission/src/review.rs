//! AdmissionReview handling: `/mutate` for pods, `/validate` for Phantom's resources. Malformed
//! bodies get a 400 with a message; every well-formed request gets an answer, and any failure to
//! evaluate is a deny (fail closed). No secret value passes through here: pods carry names only.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use phantom_crds::wellknown::{OVERRIDE_ANNOTATION, OVERRIDE_BYPASS, OVERRIDE_LABEL};
use phantom_crds::{
    AttestationRequirement, BindingPlan, KeyReleasePlan, PhantomPolicy, SecretBinding,
};
use phantom_policies::{AdmissionInput, Decision, DecisionPool, RequestInfo, UserInfo};
use serde_json::{Value, json};
use tracing::Instrument as _;

use crate::cluster::ClusterView;
use crate::config::{InjectConfig, Selection};
use crate::metrics::{
    Endpoint, EndpointLabels, Metrics, NamespaceLabels, Outcome, Validation, ValidationLabels,
};
use crate::mutate::{annotate, decision_annotations, is_injected, mutate};
use crate::{Error, validate};
use phantom_policies::store::PolicyStore;

/// The pod as it will be stored: a ReplicaSet's pods arrive without `metadata.namespace` (the
/// API server fills it in from the request), yet key-release conditions compare it.
fn stored_view(pod: &Pod, namespace: &str) -> Value {
    let mut view = serde_json::to_value(pod).unwrap_or_default();
    if view
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
        && let Some(metadata) = view.get_mut("metadata").and_then(Value::as_object_mut)
    {
        metadata.insert("namespace".into(), Value::String(namespace.to_owned()));
    }
    view
}

#[cfg(test)]
mod tests;

/// An HTTP answer: status code and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    /// A 4xx/5xx answer with `{"error": message}`.
    pub fn error(status: u16, message: &str) -> Self {
        Self {
            status,
            body: json!({ "error": message }).to_string().into_bytes(),
        }
    }
}

/// Everything a review needs; shared by all connections.
#[derive(Debug)]
pub struct Admitter {
    pub store: Arc<PolicyStore>,
    pub cluster: ClusterView,
    pub pool: DecisionPool,
    pub inject: InjectConfig,
    pub selection: Selection,
    pub metrics: Arc<Metrics>,
    /// Budget of one policy evaluation (queueing included); beyond it the pod is refused.
    pub evaluation_timeout: Duration,
}

enum Verdict {
    Allow {
        patch: Option<json_patch::Patch>,
        audit: BTreeMap<String, String>,
    },
    Deny(String),
}

/// What admission decided about a pod: the outcome (its metric label) and the answer.
struct Admission {
    outcome: Outcome,
    verdict: Verdict,
}

impl Admission {
    /// Admitted unchanged.
    fn allow(outcome: Outcome) -> Self {
        Self::patched(outcome, None, BTreeMap::new())
    }

    /// Admitted with a patch and audit annotations.
    fn patched(
        outcome: Outcome,
        patch: Option<json_patch::Patch>,
        audit: BTreeMap<String, String>,
    ) -> Self {
        Self {
            outcome,
            verdict: Verdict::Allow { patch, audit },
        }
    }

    /// Refused with `message` (a policy or what injection needs: [`Outcome::Denied`]).
    fn deny(message: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Denied,
            verdict: Verdict::Deny(message.into()),
        }
    }

    /// Refused because Phantom could not decide (fail closed).
    fn error(message: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Error,
            verdict: Verdict::Deny(message.into()),
        }
    }
}

/// Who asked for which pod, for logs, Events and metrics.
struct RequestContext<'a> {
    namespace: &'a str,
    pod_name: &'a str,
    user: &'a str,
    dry_run: bool,
}

/// Everything [`Admitter::apply`] acts on: the decision and what injection would hand the
/// sidecar.
struct InjectionPlan<'a> {
    pod: &'a Pod,
    decision: &'a Decision,
    bindings: Vec<BindingPlan>,
    key_release: Option<KeyReleasePlan>,
    request: RequestContext<'a>,
}

fn parse(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, String> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not an AdmissionReview: {e}"))?;
    if review.types.kind != "AdmissionReview" || review.types.api_version != "admission.k8s.io/v1" {
        return Err(format!(
            "expected kind AdmissionReview, apiVersion admission.k8s.io/v1; got kind {:?}, apiVersion {:?} (set admissionReviewVersions: [v1] in the webhook configuration)",
            review.types.kind, review.types.api_version
        ));
    }
    review
        .try_into()
        .map_err(|_| "the AdmissionReview has no request".to_owned())
}

/// The AdmissionReview answer. `patch` goes out base64-encoded, the documented wire format
/// (kube-core serialises the bytes as a JSON array of numbers, which only lenient decoders take).
fn answer(response: AdmissionResponse) -> Reply {
    let patch = response
        .patch
        .as_ref()
        .map(|p| base64::engine::general_purpose::STANDARD.encode(p));
    let encoded = serde_json::to_value(response.into_review()).and_then(|mut review| {
        if let (Some(patch), Some(r)) = (patch, review.get_mut("response")) {
            r["patch"] = Value::String(patch);
        }
        serde_json::to_vec(&review)
    });
    match encoded {
        Ok(body) => Reply { status: 200, body },
        Err(e) => Reply::error(500, &format!("encoding the AdmissionReview failed: {e}")),
    }
}

fn user_of(req: &AdmissionRequest<DynamicObject>) -> UserInfo {
    UserInfo {
        username: req.user_info.username.clone().unwrap_or_default(),
        groups: req.user_info.groups.clone().unwrap_or_default(),
    }
}

fn label(object: &Value, key: &str) -> Option<String> {
    object
        .pointer("/metadata/labels")
        .and_then(|l| l.get(key))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn has_label(object: &Value, (key, value): &(String, String)) -> bool {
    label(object, key).as_deref() == Some(value.as_str())
}

impl Admitter {
    /// Answers a `/mutate` request body.
    pub async fn mutate(&self, body: &[u8]) -> Reply {
        let started = Instant::now();
        let reply = match parse(body) {
            Err(message) => {
                self.bad_request(Endpoint::Mutate);
                Reply::error(400, &message)
            }
            Ok(req) => {
                let mut warnings = Vec::new();
                let span = tracing::info_span!(
                    "review",
                    uid = %req.uid,
                    namespace = req.namespace.as_deref().unwrap_or_default(),
                    pod = req.name.as_str(),
                    outcome = tracing::field::Empty,
                );
                let Admission { outcome, verdict } = self
                    .admit_pod(&req, &mut warnings)
                    .instrument(span.clone())
                    .await;
                span.record("outcome", outcome.as_str());
                self.metrics.decision(outcome);
                let mut response = AdmissionResponse::from(&req);
                if !warnings.is_empty() {
                    response.warnings = Some(warnings);
                }
                match verdict {
                    Verdict::Deny(message) => answer(response.deny(message)),
                    Verdict::Allow { patch, audit } => {
                        response.audit_annotations.extend(audit);
                        match patch.filter(|p| !p.0.is_empty()) {
                            None => answer(response),
                            Some(patch) => match response.with_patch(patch) {
                                Ok(r) => answer(r),
                                Err(e) => answer(
                                    AdmissionResponse::from(&req)
                                        .deny(format!("Phantom could not encode its patch ({e}); refusing the pod (fail closed)")),
                                ),
                            },
                        }
                    }
                }
            }
        };
        self.observe(Endpoint::Mutate, started);
        reply
    }

    /// Answers a `/validate` request body.
    pub async fn validate(&self, body: &[u8]) -> Reply {
        let started = Instant::now();
        let reply = match parse(body) {
            Err(message) => {
                self.bad_request(Endpoint::Validate);
                Reply::error(400, &message)
            }
            Ok(req) => {
                let response = AdmissionResponse::from(&req);
                let span = tracing::info_span!(
                    "validate",
                    uid = %req.uid,
                    kind = req.kind.kind.as_str(),
                    name = req.name.as_str(),
                );
                let (outcome, response) = match self.check_resource(&req).instrument(span).await {
                    Ok(()) => (Validation::Allowed, response),
                    Err(message) => (Validation::Denied, response.deny(message)),
                };
                self.metrics
                    .validations
                    .get_or_create(&ValidationLabels { outcome })
                    .inc();
                answer(response)
            }
        };
        self.observe(Endpoint::Validate, started);
        reply
    }

    fn observe(&self, endpoint: Endpoint, started: Instant) {
        self.metrics
            .latency
            .get_or_create(&EndpointLabels { endpoint })
            .observe(started.elapsed().as_secs_f64());
    }

    fn bad_request(&self, endpoint: Endpoint) {
        self.metrics
            .bad_requests
            .get_or_create(&EndpointLabels { endpoint })
            .inc();
    }

    async fn admit_pod(
        &self,
        req: &AdmissionRequest<DynamicObject>,
        warnings: &mut Vec<String>,
    ) -> Admission {
        if !req.kind.group.is_empty() || req.kind.kind != "Pod" {
            return Admission::error(format!(
                "Phantom's /mutate handles pods, not {}/{}; fix the rules of the MutatingWebhookConfiguration",
                req.kind.group, req.kind.kind
            ));
        }
        if req.operation != Operation::Create {
            return Admission::allow(Outcome::OutOfScope);
        }
        let Some(object) = &req.object else {
            return Admission::error("the CREATE request carries no pod");
        };
        let pod_value = match serde_json::to_value(object) {
            Ok(v) => v,
            Err(e) => return Admission::error(format!("the pod cannot be read: {e}")),
        };
        let pod: Pod = match serde_json::from_value(pod_value.clone()) {
            Ok(p) => p,
            Err(e) => return Admission::error(format!("the object is not a valid pod: {e}")),
        };
        let namespace = req
            .namespace
            .clone()
            .or_else(|| pod.metadata.namespace.clone())
            .unwrap_or_default();
        let namespace_object = match self.cluster.namespace(&namespace).await {
            Ok(Some(ns)) => ns,
            Ok(None) => return Admission::error(format!("namespace {namespace} does not exist")),
            Err(e) => {
                return Admission::error(format!(
                    "Phantom cannot read namespace {namespace} ({e}); refusing the pod (fail closed)"
                ));
            }
        };
        if has_label(&namespace_object, &self.selection.opt_out_label) {
            return Admission::allow(Outcome::OptedOut);
        }
        if !has_label(&namespace_object, &self.selection.enable_label) {
            return Admission::allow(Outcome::NotSelected);
        }
        let user = user_of(req);
        let pod_name = pod
            .metadata
            .name
            .clone()
            .or_else(|| pod.metadata.generate_name.clone().map(|g| format!("{g}*")))
            .unwrap_or_default();
        if label(&namespace_object, OVERRIDE_LABEL).as_deref() == Some(OVERRIDE_BYPASS) {
            return self.bypass(req, &pod, &namespace, &pod_name, &user.username);
        }
        if label(&pod_value, OVERRIDE_LABEL).is_some() {
            warnings.push(format!(
                "the label {OVERRIDE_LABEL} is honoured on namespaces only; it has no effect on a pod"
            ));
        }
        if is_injected(&pod) {
            return Admission::allow(Outcome::AlreadyInjected);
        }

        let snapshot = self.store.snapshot();
        if !snapshot.synced {
            return Admission::error(
                "Phantom's policies are not loaded yet (the watches on PhantomPolicy, SecretBinding and AttestationRequirement have not synced); refusing the pod (fail closed). Retry in a moment; if it persists, check that the CRDs are installed and phantom-admission's logs",
            );
        }
        let input = AdmissionInput {
            object: pod_value,
            old_object: None,
            namespace_object: Some(namespace_object),
            request: RequestInfo {
                operation: "CREATE".into(),
                namespace: namespace.clone(),
                name: req.name.clone(),
                user_info: user.clone(),
                dry_run: req.dry_run,
            },
        };
        let decided = tokio::time::timeout(
            self.evaluation_timeout,
            self.pool.decide(&snapshot.set, input),
        )
        .await;
        let decision = match decided {
            Ok(Ok(decision)) => decision,
            Ok(Err(e)) => {
                return Admission::error(format!(
                    "Phantom could not evaluate its policies ({e}); refusing the pod (fail closed). Retry; if it persists, see phantom-admission's logs and metrics"
                ));
            }
            Err(_) => {
                return Admission::error(format!(
                    "Phantom's policy evaluation took longer than {:?}; refusing the pod (fail closed)",
                    self.evaluation_timeout
                ));
            }
        };
        warnings.extend(decision.warnings.iter().take(16).cloned());
        let bindings: Vec<BindingPlan> = decision
            .bindings
            .iter()
            .filter_map(|r| {
                snapshot.sources.bindings.iter().find(|b| {
                    b.name_any() == r.name && b.namespace().as_deref() == Some(r.namespace.as_str())
                })
            })
            .map(|b| BindingPlan {
                name: b.name_any(),
                spec: b.spec.clone(),
            })
            .collect();
        // The sidecar checks these again before it releases anything (the last gate).
        let key_release = (!decision.key_release_policies.is_empty()).then(|| {
            snapshot.set.key_release_plan(
                &decision.key_release_policies,
                &stored_view(&pod, &namespace),
            )
        });
        self.apply(InjectionPlan {
            pod: &pod,
            decision: &decision,
            bindings,
            key_release,
            request: RequestContext {
                namespace: &namespace,
                pod_name: &pod_name,
                user: &user.username,
                dry_run: req.dry_run,
            },
        })
    }

    /// Acts on a decision: refuse, annotate only, or inject.
    fn apply(&self, plan: InjectionPlan<'_>) -> Admission {
        let InjectionPlan {
            pod,
            decision,
            bindings,
            key_release,
            request:
                RequestContext {
                    namespace,
                    pod_name,
                    user,
                    dry_run,
                },
        } = plan;
        if !decision.allowed {
            let reasons: Vec<String> = decision
                .denials
                .iter()
                .map(|d| format!("{}/{}: {}", d.policy, d.rule, d.message))
                .collect();
            tracing::info!(%namespace, pod = %pod_name, %user, policies = %reasons.len(), "pod denied by policy");
            return Admission::deny(reasons.join("; "));
        }
        if !decision.inject {
            let outcome = if decision
                .matched
                .iter()
                .any(|m| m.canary.as_ref().is_some_and(|c| !c.selected))
            {
                Outcome::CanaryExcluded
            } else {
                Outcome::NotInjected
            };
            let patch = annotate(pod, decision_annotations(decision, outcome));
            return Admission::patched(outcome, Some(patch), BTreeMap::new());
        }
        match mutate(pod, decision, &bindings, key_release.as_ref(), &self.inject) {
            Ok(patch) => {
                if !dry_run {
                    self.metrics
                        .injections
                        .get_or_create(&NamespaceLabels {
                            namespace: namespace.to_owned(),
                        })
                        .inc();
                }
                tracing::info!(%namespace, pod = %pod_name, %user, policy = ?decision.deciding_policy, digest = %decision.policy_digest, dry_run, "pod injected");
                Admission::patched(Outcome::Injected, Some(patch), BTreeMap::new())
            }
            Err(Error::Inject(message)) => Admission::deny(message),
            Err(e) => Admission::error(format!(
                "Phantom could not inject the pod ({e}); refusing (fail closed)"
            )),
        }
    }

    /// The namespace override: the pod is admitted without injection, and that is recorded on
    /// the pod, in the audit log, as an Event, a metric and a log line naming who created it.
    fn bypass(
        &self,
        req: &AdmissionRequest<DynamicObject>,
        pod: &Pod,
        namespace: &str,
        pod_name: &str,
        user: &str,
    ) -> Admission {
        let record = format!("{OVERRIDE_BYPASS} by namespace {namespace}; pod created by {user}");
        tracing::warn!(%namespace, pod = %pod_name, %user, dry_run = req.dry_run, "namespace override: pod admitted without Phantom injection");
        if !req.dry_run {
            self.metrics
                .overrides
                .get_or_create(&NamespaceLabels {
                    namespace: namespace.to_owned(),
                })
                .inc();
            self.cluster.warn_on_namespace(
                namespace,
                "PhantomOverride",
                format!("pod {pod_name} admitted without Phantom injection: namespace carries {OVERRIDE_LABEL}={OVERRIDE_BYPASS}; created by {user}"),
            );
        }
        let patch = annotate(
            pod,
            BTreeMap::from([(OVERRIDE_ANNOTATION.to_owned(), record.clone())]),
        );
        Admission::patched(
            Outcome::Bypassed,
            Some(patch),
            BTreeMap::from([("override".to_owned(), record)]),
        )
    }

    async fn check_resource(&self, req: &AdmissionRequest<DynamicObject>) -> Result<(), String> {
        if matches!(req.operation, Operation::Delete | Operation::Connect) {
            return Ok(());
        }
        let Some(object) = &req.object else {
            return Err("the request carries no object".into());
        };
        let value = serde_json::to_value(object).map_err(|e| e.to_string())?;
        let snapshot = self.store.snapshot();
        let typed = |kind: &str| format!("the {kind} cannot be read: ");
        match (req.kind.group.as_str(), req.kind.kind.as_str()) {
            ("phantom.dev", "PhantomPolicy") => {
                let policy: PhantomPolicy = serde_json::from_value(value)
                    .map_err(|e| typed("PhantomPolicy") + &e.to_string())?;
                let modules = self.cluster.modules(std::slice::from_ref(&policy)).await;
                validate::policy(&policy, &snapshot, &modules)
            }
            ("phantom.dev", "AttestationRequirement") => {
                let requirement: AttestationRequirement = serde_json::from_value(value)
                    .map_err(|e| typed("AttestationRequirement") + &e.to_string())?;
                validate::requirement(
                    &requirement,
                    &snapshot,
                    &phantom_policies::Modules::default(),
                )
            }
            ("phantom.dev", "SecretBinding") => {
                let binding: SecretBinding = serde_json::from_value(value)
                    .map_err(|e| typed("SecretBinding") + &e.to_string())?;
                let namespace = req.namespace.clone().unwrap_or_default();
                let ns = self
                    .cluster
                    .namespace(&namespace)
                    .await?
                    .ok_or_else(|| format!("namespace {namespace} does not exist"))?;
                validate::binding(
                    &binding,
                    &ns,
                    &snapshot,
                    &phantom_policies::Modules::default(),
                )
                .map(|_| ())
            }
            (group, kind) => Err(format!(
                "Phantom's /validate handles phantom.dev resources, not {group}/{kind}; fix the rules of the ValidatingWebhookConfiguration"
            )),
        }
    }
}
