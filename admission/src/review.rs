//! AdmissionReview handling: `/mutate` for pods, `/validate` for Phantom's resources. Malformed
//! bodies get a 400 with a message; every well-formed request gets an answer, and any failure to
//! evaluate is a deny (fail closed). No secret value passes through here: pods carry names only.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use phantom_crds::wellknown::{
    BINDINGS_ANNOTATION, OVERRIDE_ANNOTATION, OVERRIDE_BYPASS, OVERRIDE_LABEL,
};
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
use crate::reserved;
use crate::seal::{ReloadingSealKey, Sealing};
use crate::update::{self, Change};
use crate::{Error, validate};
use phantom_policies::store::{PolicyStore, Snapshot};

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
mod fuzz;
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
    /// The key every decision record is sealed with.
    pub seal_key: Arc<ReloadingSealKey>,
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

/// A namespace Phantom acts in.
struct Scope {
    namespace: String,
    namespace_object: Value,
    /// The namespace carries the break-glass label.
    bypass: bool,
}

/// A pod being created, as the review holds it.
struct Created<'a> {
    pod: &'a Pod,
    object: Value,
    scope: Scope,
    user: UserInfo,
}

/// `policy/rule: message` of each refusal in `decision`.
fn denial_reasons(decision: &Decision) -> Vec<String> {
    decision
        .denials
        .iter()
        .map(|d| format!("{}/{}: {}", d.policy, d.rule, d.message))
        .collect()
}

fn typed_pod(object: Value) -> Result<Pod, Admission> {
    serde_json::from_value(object)
        .map_err(|e| Admission::error(format!("the object is not a valid pod: {e}")))
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
                    Ok(warnings) => {
                        let mut response = response;
                        response.warnings = (!warnings.is_empty()).then_some(warnings);
                        (Validation::Allowed, response)
                    }
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
        if !req.kind.group.is_empty()
            || !matches!(req.kind.kind.as_str(), "Pod" | "EphemeralContainers")
        {
            return Admission::error(format!(
                "Phantom's /mutate handles pods, not {}/{}; fix the rules of the MutatingWebhookConfiguration",
                req.kind.group, req.kind.kind
            ));
        }
        let Some(object) = &req.object else {
            return Admission::error(format!("the {:?} request carries no object", req.operation));
        };
        let object = match serde_json::to_value(object) {
            Ok(v) => v,
            Err(e) => return Admission::error(format!("the pod cannot be read: {e}")),
        };
        let namespace = req
            .namespace
            .clone()
            .or_else(|| {
                object
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        let scope = match self.scope(&namespace).await {
            Ok(scope) => scope,
            Err(admission) => return admission,
        };
        let user = user_of(req);
        match (&req.operation, req.sub_resource.as_deref()) {
            (Operation::Create, None) => {
                let pod = match typed_pod(object.clone()) {
                    Ok(pod) => pod,
                    Err(admission) => return admission,
                };
                self.admit_created(
                    req,
                    Created {
                        pod: &pod,
                        object,
                        scope,
                        user,
                    },
                    warnings,
                )
                .await
            }
            // The break-glass label switches Phantom off for the namespace, UPDATE checks
            // included (the webhook configuration does not even send them).
            (Operation::Update, _) if scope.bypass => Admission::allow(Outcome::Bypassed),
            (Operation::Update, None) => {
                self.admit_updated(req, object, scope, user, warnings).await
            }
            (Operation::Update, Some("ephemeralcontainers")) => {
                self.admit_ephemeral(req, &object, &scope.namespace).await
            }
            _ => Admission::allow(Outcome::OutOfScope),
        }
    }

    /// Whether Phantom acts in `namespace`; `Err` is the answer when it does not (or cannot tell).
    async fn scope(&self, namespace: &str) -> Result<Scope, Admission> {
        let namespace_object = match self.cluster.namespace(namespace).await {
            Ok(Some(ns)) => ns,
            Ok(None) => {
                return Err(Admission::error(format!(
                    "namespace {namespace} does not exist"
                )));
            }
            Err(e) => {
                return Err(Admission::error(format!(
                    "Phantom cannot read namespace {namespace} ({e}); refusing the pod (fail closed)"
                )));
            }
        };
        if has_label(&namespace_object, &self.selection.opt_out_label) {
            return Err(Admission::allow(Outcome::OptedOut));
        }
        if !has_label(&namespace_object, &self.selection.enable_label) {
            return Err(Admission::allow(Outcome::NotSelected));
        }
        let bypass = label(&namespace_object, OVERRIDE_LABEL).as_deref() == Some(OVERRIDE_BYPASS);
        Ok(Scope {
            namespace: namespace.to_owned(),
            namespace_object,
            bypass,
        })
    }

    /// A pod CREATE: the policies decide, always (nothing on the pod can mean "already decided").
    async fn admit_created(
        &self,
        req: &AdmissionRequest<DynamicObject>,
        created: Created<'_>,
        warnings: &mut Vec<String>,
    ) -> Admission {
        let Created {
            pod,
            object,
            scope,
            user,
        } = created;
        let namespace = scope.namespace;
        let pod_name = pod
            .metadata
            .name
            .clone()
            .or_else(|| pod.metadata.generate_name.clone().map(|g| format!("{g}*")))
            .unwrap_or_default();
        if let Some(reserved) = reserved::find(pod) {
            tracing::info!(%namespace, pod = %pod_name, user = %user.username, %reserved, "pod refused: it carries Phantom's reserved names");
            return Admission::deny(reserved.to_string());
        }
        if scope.bypass {
            return self.bypass(req, pod, &namespace, &pod_name, &user.username);
        }
        if label(&object, OVERRIDE_LABEL).is_some() {
            warnings.push(format!(
                "the label {OVERRIDE_LABEL} is honoured on namespaces only; it has no effect on a pod"
            ));
        }
        let input = AdmissionInput {
            object,
            old_object: None,
            namespace_object: Some(scope.namespace_object),
            request: RequestInfo {
                operation: "CREATE".into(),
                namespace: namespace.clone(),
                name: req.name.clone(),
                user_info: user.clone(),
                dry_run: req.dry_run,
            },
        };
        let (snapshot, decision) = match self.evaluate(input).await {
            Ok(decided) => decided,
            Err(admission) => return admission,
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
                &stored_view(pod, &namespace),
            )
        });
        self.apply(InjectionPlan {
            pod,
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

    /// Runs the policies on the bounded pool within the evaluation budget (fail closed).
    async fn evaluate(
        &self,
        input: AdmissionInput,
    ) -> Result<(Arc<Snapshot>, Decision), Admission> {
        let snapshot = self.store.snapshot();
        if !snapshot.synced {
            return Err(Admission::error(
                "Phantom's policies are not loaded yet (the watches on PhantomPolicy, SecretBinding and AttestationRequirement have not synced); refusing the pod (fail closed). Retry in a moment; if it persists, check that the CRDs are installed and phantom-admission's logs",
            ));
        }
        // The pool stops the evaluation at the deadline too, so the work ends with the answer.
        let deadline = Instant::now() + self.evaluation_timeout;
        let decided = tokio::time::timeout(
            self.evaluation_timeout,
            self.pool.decide(&snapshot.set, input, deadline),
        )
        .await;
        match decided {
            Ok(Ok(decision)) => Ok((snapshot, decision)),
            Ok(Err(phantom_policies::Error::Deadline { policy })) => {
                Err(Admission::error(format!(
                    "Phantom's policy evaluation took longer than {:?} (stopped in PhantomPolicy {policy}); refusing the pod (fail closed)",
                    self.evaluation_timeout
                )))
            }
            Ok(Err(e)) => Err(Admission::error(format!(
                "Phantom could not evaluate its policies ({e}); refusing the pod (fail closed). Retry; if it persists, see phantom-admission's logs and metrics"
            ))),
            Err(_) => Err(Admission::error(format!(
                "Phantom's policy evaluation took longer than {:?}; refusing the pod (fail closed)",
                self.evaluation_timeout
            ))),
        }
    }

    /// A pod UPDATE: Phantom's own annotations and containers stay as admission wrote them, and
    /// new images are put to the policies again.
    async fn admit_updated(
        &self,
        req: &AdmissionRequest<DynamicObject>,
        object: Value,
        scope: Scope,
        user: UserInfo,
        warnings: &mut Vec<String>,
    ) -> Admission {
        let Some(old_object) = req
            .old_object
            .as_ref()
            .and_then(|o| serde_json::to_value(o).ok())
        else {
            return Admission::error("the UPDATE request carries no old object");
        };
        let (old, new) = match (typed_pod(old_object.clone()), typed_pod(object.clone())) {
            (Ok(old), Ok(new)) => (old, new),
            (Err(admission), _) | (_, Err(admission)) => return admission,
        };
        let images = match update::classify(&old, &new) {
            Change::Unguarded => return Admission::allow(Outcome::Updated),
            Change::Annotation(key) => {
                return Admission::deny(format!(
                    "annotation {key} records what Phantom's admission decided when the pod was created; an UPDATE may not add, change or remove it. Leave it as it is (other annotations may change)"
                ));
            }
            Change::PhantomImage { container } => {
                return Admission::deny(format!(
                    "container {container} is Phantom's and its image is set by phantom-admission; it may not change on a stored pod. Recreate the pod (roll its Deployment) to get the current Phantom images"
                ));
            }
            Change::Images(images) => images,
        };
        let namespace = scope.namespace;
        let input = AdmissionInput {
            object,
            old_object: Some(old_object),
            namespace_object: Some(scope.namespace_object),
            request: RequestInfo {
                operation: "UPDATE".into(),
                namespace: namespace.clone(),
                name: req.name.clone(),
                user_info: user.clone(),
                dry_run: req.dry_run,
            },
        };
        let decision = match self.evaluate(input).await {
            Ok((_, decision)) => decision,
            Err(admission) => return admission,
        };
        warnings.extend(decision.warnings.iter().take(16).cloned());
        let changed = images.join(", ");
        if !decision.allowed {
            let reasons = denial_reasons(&decision);
            tracing::info!(%namespace, pod = %req.name, user = %user.username, containers = %changed, "image update denied by policy");
            return Admission::deny(format!(
                "the new image of container(s) {changed}: {}",
                reasons.join("; ")
            ));
        }
        if !is_injected(&old) {
            if decision.inject {
                warnings.push(format!(
                    "pod {} runs without Phantom; the policies would inject it now: recreate it (roll its Deployment) to get its secrets",
                    req.name
                ));
            }
            return Admission::allow(Outcome::Updated);
        }
        let recorded: BTreeSet<&str> = old
            .annotations()
            .get(BINDINGS_ANNOTATION)
            .map(|b| b.split(',').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        let now: BTreeSet<&str> = decision.bindings.iter().map(|b| b.name.as_str()).collect();
        if !decision.inject || recorded != now {
            let wanted = if decision.inject {
                format!(
                    "injected with SecretBindings [{}]",
                    now.into_iter().collect::<Vec<_>>().join(", ")
                )
            } else {
                "not injected".to_owned()
            };
            return Admission::deny(format!(
                "with the new image of container(s) {changed}, the policies would have this pod {wanted}, but it was injected with SecretBindings [{}]; a stored pod's injection cannot change. Recreate the pod (roll its Deployment) instead of updating its image",
                recorded.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        tracing::info!(%namespace, pod = %req.name, user = %user.username, containers = %changed, "image update of an injected pod allowed by policy");
        Admission::allow(Outcome::Updated)
    }

    /// `pods/ephemeralcontainers`: a debug container may not reach what Phantom delivered.
    async fn admit_ephemeral(
        &self,
        req: &AdmissionRequest<DynamicObject>,
        object: &Value,
        namespace: &str,
    ) -> Admission {
        // From 1.22 the body is the pod; before, an EphemeralContainers object without it.
        let pod = if object.get("spec").is_some() {
            typed_pod(object.clone())
        } else {
            match self.cluster.pod(namespace, &req.name).await {
                Ok(Some(pod)) => typed_pod(pod),
                Ok(None) => {
                    return Admission::error(format!(
                        "pod {namespace}/{} does not exist",
                        req.name
                    ));
                }
                Err(e) => {
                    return Admission::error(format!(
                        "Phantom cannot read pod {namespace}/{} ({e}) to judge its new ephemeral containers; refusing them (fail closed)",
                        req.name
                    ));
                }
            }
        };
        let pod = match pod {
            Ok(pod) => pod,
            Err(admission) => return admission,
        };
        let old = req
            .old_object
            .as_ref()
            .and_then(|o| serde_json::to_value(o).ok())
            .map(|o| update::ephemeral_containers(&o))
            .unwrap_or_default();
        let facts = update::PodFacts::of(&pod, is_injected(&pod));
        match update::ephemeral_refusal(&facts, &old, &update::ephemeral_containers(object)) {
            Some(message) => Admission::deny(message),
            None => Admission::allow(Outcome::Updated),
        }
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
            let reasons = denial_reasons(decision);
            tracing::info!(%namespace, pod = %pod_name, %user, policies = %reasons.len(), "pod denied by policy");
            return Admission::deny(reasons.join("; "));
        }
        let sealing = Sealing::now(self.seal_key.current(), namespace, dry_run);
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
            return match annotate(pod, decision_annotations(decision, outcome), &sealing) {
                Ok(patch) => Admission::patched(outcome, Some(patch), BTreeMap::new()),
                Err(e) => Admission::error(format!(
                    "Phantom could not record its decision on the pod ({e}); refusing (fail closed)"
                )),
            };
        }
        match mutate(
            pod,
            decision,
            &bindings,
            key_release.as_ref(),
            &self.inject,
            &sealing,
        ) {
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
        let sealing = Sealing::now(self.seal_key.current(), namespace, req.dry_run);
        match annotate(
            pod,
            BTreeMap::from([(OVERRIDE_ANNOTATION.to_owned(), record.clone())]),
            &sealing,
        ) {
            Ok(patch) => Admission::patched(
                Outcome::Bypassed,
                Some(patch),
                BTreeMap::from([("override".to_owned(), record)]),
            ),
            Err(e) => Admission::error(format!(
                "Phantom could not record the override on the pod ({e}); refusing (fail closed)"
            )),
        }
    }

    /// Admits or refuses one of Phantom's resources; `Ok` carries warnings for its author.
    async fn check_resource(
        &self,
        req: &AdmissionRequest<DynamicObject>,
    ) -> Result<Vec<String>, String> {
        if matches!(req.operation, Operation::Delete | Operation::Connect) {
            return Ok(Vec::new());
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
                validate::policy(&policy, &snapshot, &modules).map(|()| Vec::new())
            }
            ("phantom.dev", "AttestationRequirement") => {
                let requirement: AttestationRequirement = serde_json::from_value(value)
                    .map_err(|e| typed("AttestationRequirement") + &e.to_string())?;
                validate::requirement(
                    &requirement,
                    &snapshot,
                    &phantom_policies::Modules::default(),
                )
                .map(|()| Vec::new())
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
                )?;
                Ok(validate::binding_conflicts(&binding, &snapshot))
            }
            (group, kind) => Err(format!(
                "Phantom's /validate handles phantom.dev resources, not {group}/{kind}; fix the rules of the ValidatingWebhookConfiguration"
            )),
        }
    }
}
