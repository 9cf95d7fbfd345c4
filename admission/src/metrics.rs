//! Prometheus metrics, `phantom_admission_*`. Labels carry endpoints, outcomes and namespace
//! names only: never pod specs, never anything a secret could hide in.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

phantom_process::label_enum! {
    /// The webhook's endpoints.
    pub enum Endpoint {
        Mutate => "mutate",
        Validate => "validate",
    }
}

phantom_process::label_enum! {
    /// What admission did with a pod.
    pub enum Outcome {
        /// Injected: sidecar, wrapper and plan added.
        Injected => "injected",
        /// Matched and allowed, but not injected (no binding, or the policy does not inject).
        NotInjected => "not-injected",
        /// Left out of a canary rollout.
        CanaryExcluded => "canary-excluded",
        /// Refused by a policy rule or by what injection needs.
        Denied => "denied",
        /// The namespace carries no enable label.
        NotSelected => "not-selected",
        /// The namespace opted out.
        OptedOut => "opted-out",
        /// The namespace override: admitted without injection, recorded.
        Bypassed => "bypassed",
        /// An UPDATE of a stored pod (or a new ephemeral container) that Phantom lets through.
        Updated => "update-allowed",
        /// An operation admission does not evaluate.
        OutOfScope => "out-of-scope",
        /// Phantom could not decide: refused (fail closed).
        Error => "error",
    }
}

phantom_process::label_enum! {
    /// A verdict on one of Phantom's own resources.
    pub enum Validation {
        Allowed => "allowed",
        Denied => "denied",
    }
}

phantom_process::label_enum! {
    /// Why a request was turned away before it was read.
    pub enum Shed {
        /// `--max-connections` connections were open.
        Connections => "connections",
        /// The memory budget of requests in flight (`--max-inflight-bytes`) was spent.
        Memory => "memory",
        /// The body did not arrive within the read timeout.
        SlowBody => "slow-body",
    }
}

phantom_process::label_enum! {
    /// How a reload of the serving certificate or the seal key ended.
    pub enum Reload {
        Ok => "ok",
        Error => "error",
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: Endpoint,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ValidationLabels {
    pub outcome: Validation,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub outcome: Reload,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShedLabels {
    pub reason: Shed,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    pub namespace: String,
}

type HistogramFamily = Family<EndpointLabels, Histogram, fn() -> Histogram>;

/// The webhook's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Request latency by endpoint (`mutate`, `validate`).
    pub latency: HistogramFamily,
    /// Pod decisions by [`Outcome`].
    pub decisions: Family<DecisionLabels, Counter>,
    /// Injected pods by namespace.
    pub injections: Family<NamespaceLabels, Counter>,
    /// Pods admitted through the namespace override, by namespace.
    pub overrides: Family<NamespaceLabels, Counter>,
    /// Requests answered 4xx (malformed AdmissionReviews), by endpoint.
    pub bad_requests: Family<EndpointLabels, Counter>,
    /// Validation verdicts on Phantom's resources by outcome (`allowed`, `denied`).
    pub validations: Family<ValidationLabels, Counter>,
    /// Generation of the policy set in force.
    pub policy_generation: Gauge,
    /// Objects whose current version does not compile.
    pub policy_errors: Gauge,
    /// Objects enforced at a previous version because the current one does not compile.
    pub policies_held_back: Gauge,
    /// Serving-certificate reloads by outcome (`ok`, `error`).
    pub certificate_reloads: Family<ReloadLabels, Counter>,
    /// Decision-seal key reloads by outcome (`ok`, `error`).
    pub seal_key_reloads: Family<ReloadLabels, Counter>,
    /// Requests and connections turned away under load, by [`Shed`] reason.
    pub shed: Family<ShedLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("phantom_admission");
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let m = Self {
            latency,
            decisions: Family::default(),
            injections: Family::default(),
            overrides: Family::default(),
            bad_requests: Family::default(),
            validations: Family::default(),
            policy_generation: Gauge::default(),
            policy_errors: Gauge::default(),
            policies_held_back: Gauge::default(),
            certificate_reloads: Family::default(),
            seal_key_reloads: Family::default(),
            shed: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "request_duration_seconds",
            "Time to answer an AdmissionReview",
            m.latency.clone(),
        );
        registry.register("decisions", "Pod decisions by outcome", m.decisions.clone());
        registry.register(
            "injections",
            "Injected pods by namespace",
            m.injections.clone(),
        );
        registry.register(
            "overrides",
            "Pods admitted without injection through the namespace override label",
            m.overrides.clone(),
        );
        registry.register(
            "bad_requests",
            "Malformed requests answered with 4xx",
            m.bad_requests.clone(),
        );
        registry.register(
            "validations",
            "Verdicts on Phantom's own resources",
            m.validations.clone(),
        );
        registry.register(
            "policy_generation",
            "Generation of the policy set in force",
            m.policy_generation.clone(),
        );
        registry.register(
            "policy_errors",
            "Objects whose current version does not compile",
            m.policy_errors.clone(),
        );
        registry.register(
            "policies_held_back",
            "Objects enforced at their last good version",
            m.policies_held_back.clone(),
        );
        registry.register(
            "certificate_reloads",
            "Serving certificate reloads by outcome",
            m.certificate_reloads.clone(),
        );
        registry.register(
            "seal_key_reloads",
            "Decision-seal key reloads by outcome",
            m.seal_key_reloads.clone(),
        );
        registry.register(
            "shed",
            "Requests and connections turned away under load, by reason",
            m.shed.clone(),
        );
        Self { registry, ..m }
    }
}

impl Metrics {
    /// Counts one decision.
    pub fn decision(&self, outcome: Outcome) {
        self.decisions
            .get_or_create(&DecisionLabels { outcome })
            .inc();
    }

    /// Counts one request or connection turned away.
    pub fn shed(&self, reason: Shed) {
        self.shed.get_or_create(&ShedLabels { reason }).inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_phantom_prefix() {
        let m = Metrics::default();
        m.decision(Outcome::Injected);
        m.latency
            .get_or_create(&EndpointLabels {
                endpoint: Endpoint::Mutate,
            })
            .observe(0.001);
        m.injections
            .get_or_create(&NamespaceLabels {
                namespace: "shop".into(),
            })
            .inc();
        let text = m.encode();
        assert!(
            text.contains(r#"phantom_admission_decisions_total{outcome="injected"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"phantom_admission_injections_total{namespace="shop"} 1"#));
        assert!(text.contains("phantom_admission_request_duration_seconds"));
    }
}
