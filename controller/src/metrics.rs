//! Prometheus metrics, `phantom_controller_*`, and the `/metrics`, `/healthz`, `/readyz` port.
//! Labels carry kinds, configuration names and outcomes only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::Result;

phantom_process::label_enum! {
    /// The resources the controller reconciles.
    pub enum Kind {
        PhantomPolicy => "PhantomPolicy",
        SecretBinding => "SecretBinding",
        AttestationRequirement => "AttestationRequirement",
    }
}

/// A resource the controller reconciles, with its metric label.
pub trait Reconciled {
    const KIND: Kind;
}

impl Reconciled for phantom_crds::PhantomPolicy {
    const KIND: Kind = Kind::PhantomPolicy;
}

impl Reconciled for phantom_crds::SecretBinding {
    const KIND: Kind = Kind::SecretBinding;
}

impl Reconciled for phantom_crds::AttestationRequirement {
    const KIND: Kind = Kind::AttestationRequirement;
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: Kind,
}

phantom_process::label_enum! {
    /// The webhook configurations the controller owns.
    pub enum Configuration {
        Mutating => "MutatingWebhookConfiguration",
        Validating => "ValidatingWebhookConfiguration",
    }
}

phantom_process::label_enum! {
    /// Why a configuration was put back.
    pub enum Cause {
        /// Someone deleted it.
        Deleted => "deleted",
        /// Someone changed a field the controller sets.
        Altered => "altered",
    }
}

phantom_process::label_enum! {
    /// The two certificates the controller issues.
    pub enum Certificate {
        Ca => "ca",
        Serving => "serving",
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestorationLabels {
    pub configuration: Configuration,
    pub cause: Cause,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: crate::breaker::State,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    pub certificate: Certificate,
}

type DurationFamily = Family<KindLabels, Histogram, fn() -> Histogram>;

/// The controller's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Status reconciliations' duration by kind.
    pub reconcile_duration: DurationFamily,
    /// Failed reconciliations by kind.
    pub reconcile_errors: Family<KindLabels, Counter>,
    /// 1 while this replica leads.
    pub leader: Gauge,
    /// 1 while the circuit breaker is open.
    pub breaker_open: Gauge,
    /// Breaker transitions by the state entered.
    pub breaker_transitions: Family<StateLabels, Counter>,
    /// Webhook configurations put back after they were deleted or altered.
    pub webhook_restorations: Family<RestorationLabels, Counter>,
    /// Pods found admitted without Phantom (current count).
    pub gap_pods: Gauge,
    /// Gap pods evicted so their owner re-creates them through the webhook.
    pub gap_pods_evicted: Counter,
    /// Seconds until each certificate expires.
    pub certificate_expiry_seconds: Family<CertificateLabels, Gauge>,
    /// Certificates generated, by certificate.
    pub certificate_rotations: Family<CertificateLabels, Counter>,
    /// Objects whose current version does not compile.
    pub policy_errors: Gauge,
    /// Generation of the compiled policy set.
    pub policy_generation: Gauge,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("phantom_controller");
        let m = Self {
            reconcile_duration: Family::new_with_constructor(duration_histogram),
            reconcile_errors: Family::default(),
            leader: Gauge::default(),
            breaker_open: Gauge::default(),
            breaker_transitions: Family::default(),
            webhook_restorations: Family::default(),
            gap_pods: Gauge::default(),
            gap_pods_evicted: Counter::default(),
            certificate_expiry_seconds: Family::default(),
            certificate_rotations: Family::default(),
            policy_errors: Gauge::default(),
            policy_generation: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "reconcile_duration_seconds",
            "Status reconciliation duration by kind",
            m.reconcile_duration.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciliations by kind",
            m.reconcile_errors.clone(),
        );
        registry.register("leader", "1 while this replica leads", m.leader.clone());
        registry.register(
            "breaker_open",
            "1 while the admission circuit breaker is open",
            m.breaker_open.clone(),
        );
        registry.register(
            "breaker_transitions",
            "Circuit breaker transitions by the state entered",
            m.breaker_transitions.clone(),
        );
        registry.register(
            "webhook_restorations",
            "Webhook configurations restored after being deleted or altered",
            m.webhook_restorations.clone(),
        );
        registry.register(
            "gap_pods",
            "Pods admitted without Phantom in covered namespaces",
            m.gap_pods.clone(),
        );
        registry.register(
            "gap_pods_evicted",
            "Gap pods evicted so that their owner re-creates them through the webhook",
            m.gap_pods_evicted.clone(),
        );
        registry.register(
            "certificate_expiry_seconds",
            "Seconds until the webhook CA or serving certificate expires",
            m.certificate_expiry_seconds.clone(),
        );
        registry.register(
            "certificate_rotations",
            "Webhook certificates generated",
            m.certificate_rotations.clone(),
        );
        registry.register(
            "policy_errors",
            "Phantom objects whose current version does not compile",
            m.policy_errors.clone(),
        );
        registry.register(
            "policy_generation",
            "Generation of the compiled policy set",
            m.policy_generation.clone(),
        );
        Self { registry, ..m }
    }
}

impl Metrics {
    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` (ready once Phantom's CRDs are served) on `addr`
/// until the returned server is dropped.
pub fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
) -> Result<phantom_process::StatusServer> {
    let readiness = move || {
        if ready.load(Ordering::SeqCst) {
            Ok("ok\n".to_owned())
        } else {
            Err(
                "not ready: Phantom's CRDs are not served yet (kubectl apply -f crds/yaml/)\n"
                    .to_owned(),
            )
        }
    };
    Ok(phantom_process::serve_status(
        addr,
        Arc::new(move || metrics.encode()),
        Arc::new(readiness),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_the_phantom_controller_prefix() {
        let m = Metrics::default();
        m.breaker_open.set(1);
        m.webhook_restorations
            .get_or_create(&RestorationLabels {
                configuration: Configuration::Mutating,
                cause: Cause::Deleted,
            })
            .inc();
        let text = m.encode();
        assert!(text.contains("phantom_controller_breaker_open 1"), "{text}");
        assert!(text.contains(r#"phantom_controller_webhook_restorations_total{configuration="MutatingWebhookConfiguration",cause="deleted"} 1"#), "{text}");
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            assert!(line.starts_with("phantom_controller_"), "{line}");
        }
    }
}
