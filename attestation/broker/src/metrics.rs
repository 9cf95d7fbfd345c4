//! Prometheus metrics, `phantom_broker_*`. Labels carry the outcome, the check that refused and
//! the TEE: never a pod spec, a token, evidence bytes or a value.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

phantom_process::label_enum! {
    /// Which check a release failed (also the `kind` of the refusal the sidecar receives).
    pub enum Check {
        /// The request body is not a release request.
        Request => "request",
        /// The nonce: unknown, used, expired.
        Challenge => "challenge",
        /// The token: not reviewed, not a pod's, another pod's.
        Identity => "identity",
        /// The pod or binding does not exist where the token says.
        Binding => "binding",
        /// No enforced policy admits or gates the binding.
        Policy => "policy",
        /// The evidence or its collateral did not verify.
        Evidence => "evidence",
        /// The evidence does not bind this release.
        ReportData => "report_data",
        /// An AttestationRequirement field refused the verified claims.
        Requirement => "requirement",
        /// A CEL condition (requirement or policy) refused.
        Conditions => "conditions",
        /// OpenBao refused or failed the broker's read.
        OpenBao => "openbao",
        /// The broker is not ready (policy set not synced, API server unreachable).
        Unavailable => "unavailable",
    }
}

phantom_process::label_enum! {
    /// How a release ended.
    pub enum Outcome {
        Released => "released",
        Refused => "refused",
    }
}

phantom_process::label_enum! {
    /// The TEE of the evidence.
    pub enum TeeLabel {
        SevSnp => "sev-snp",
        Tdx => "tdx",
        Unknown => "unknown",
    }
}

phantom_process::label_enum! {
    /// A collateral entry's status.
    pub enum EntryLabel {
        Ready => "ready",
        Expired => "expired",
        Invalid => "invalid",
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReleaseLabels {
    pub outcome: Outcome,
    pub check: Option<Check>,
    pub tee: TeeLabel,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CollateralLabels {
    pub tee: TeeLabel,
    pub status: EntryLabel,
}

/// The broker's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub releases: Family<ReleaseLabels, Counter>,
    pub release_seconds: Histogram,
    pub challenges_issued: Counter,
    pub challenges_outstanding: Gauge,
    pub collateral_entries: Family<CollateralLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("phantom_broker");
        let releases = Family::<ReleaseLabels, Counter>::default();
        registry.register(
            "releases",
            "Release requests by outcome, the check that refused, and TEE",
            releases.clone(),
        );
        let release_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "release_duration_seconds",
            "Time from a release request to its answer (review, verification, OpenBao read, sealing)",
            release_seconds.clone(),
        );
        let challenges_issued = Counter::default();
        registry.register(
            "challenges_issued",
            "Challenges handed out",
            challenges_issued.clone(),
        );
        let challenges_outstanding = Gauge::default();
        registry.register(
            "challenges_outstanding",
            "Challenges issued and not yet used or expired",
            challenges_outstanding.clone(),
        );
        let collateral_entries = Family::<CollateralLabels, Gauge>::default();
        registry.register(
            "collateral_entries",
            "Files of the collateral bundle by TEE and status",
            collateral_entries.clone(),
        );
        Self {
            registry,
            releases,
            release_seconds,
            challenges_issued,
            challenges_outstanding,
            collateral_entries,
        }
    }
}

impl Metrics {
    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
