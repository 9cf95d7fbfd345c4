//! `AttestationRequirement`: written by the security team; what TEE evidence a pod must present
//! before keys are released, and which OpenBao endpoints and jurisdictions are acceptable.

use kube::CustomResource;
use kube::core::Duration;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{CelRule, CommonStatus};

/// Evidence a pod's TEE must present, verified before key release.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "phantom.dev",
    version = "v1alpha1",
    kind = "AttestationRequirement",
    plural = "attestationrequirements",
    shortname = "attreq",
    category = "phantom",
    status = "AttestationRequirementStatus",
    doc = "TEE evidence (AMD SEV-SNP, Intel TDX) and OpenBao endpoint constraints that gate the release of secrets.",
    printcolumn(name = "TEEs", type_ = "string", json_path = ".spec.teeTypes"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(
        name = "MaxAge",
        type_ = "string",
        json_path = ".spec.freshness.maxEvidenceAge"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AttestationRequirementSpec {
    /// Accepted TEE technologies; evidence from any other is refused.
    #[schemars(length(min = 1, max = 2))]
    pub tee_types: Vec<TeeType>,
    /// Requirements on AMD SEV-SNP evidence (required when `sev-snp` is accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sev_snp: Option<SevSnpRequirement>,
    /// Requirements on Intel TDX evidence (required when `tdx` is accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tdx: Option<TdxRequirement>,
    /// How recent the evidence must be.
    #[serde(default)]
    pub freshness: Freshness,
    /// Constraints on the OpenBao endpoint the secrets come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openbao: Option<OpenBaoEndpointRequirement>,
    /// Extra CEL conditions over the verified claims (`attestation`); all must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub conditions: Vec<CelRule>,
}

/// TEE technologies.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TeeType {
    /// AMD SEV-SNP.
    SevSnp,
    /// Intel TDX.
    Tdx,
}

/// AMD SEV-SNP acceptance criteria.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SevSnpRequirement {
    /// Accepted launch measurements (48 bytes, lower-case hex); empty accepts none.
    #[schemars(length(min = 1))]
    pub measurements: Vec<Measurement48>,
    /// Minimum reported TCB.
    #[serde(default)]
    pub min_tcb: SnpTcb,
    /// Accept guests launched with the debug policy bit (never in production).
    #[serde(default)]
    pub allow_debug: bool,
    /// Required VM privilege level of the reporting vCPU (0 = most privileged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3))]
    pub vmpl: Option<u8>,
}

/// A 48-byte measurement as 96 lower-case hex characters.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(transparent)]
pub struct Measurement48(#[schemars(regex(pattern = r"^[a-f0-9]{96}$"))] pub String);

/// SEV-SNP TCB version components (SVNs).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnpTcb {
    #[serde(default)]
    pub bootloader: u8,
    #[serde(default)]
    pub tee: u8,
    #[serde(default)]
    pub snp: u8,
    #[serde(default)]
    pub microcode: u8,
}

/// Intel TDX acceptance criteria.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TdxRequirement {
    /// Accepted MRTD values (build-time measurement of the TD).
    #[schemars(length(min = 1))]
    pub mrtd: Vec<Measurement48>,
    /// Accepted runtime measurement registers; each entry pins the RTMRs it names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rtmrs: Vec<RtmrSet>,
    /// TCB statuses from the collateral that are accepted.
    #[serde(default = "default_tcb_statuses")]
    #[schemars(length(min = 1))]
    pub accepted_tcb_statuses: Vec<TdxTcbStatus>,
    /// Intel security advisories tolerated in a non-`UpToDate` TCB, e.g. `INTEL-SA-00837`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_advisories: Vec<Advisory>,
}

fn default_tcb_statuses() -> Vec<TdxTcbStatus> {
    vec![TdxTcbStatus::UpToDate]
}

/// An Intel security advisory id.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(transparent)]
pub struct Advisory(#[schemars(regex(pattern = r"^INTEL-SA-[0-9]{5}$"))] pub String);

/// Expected RTMR values; an absent register is not checked.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct RtmrSet {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmr0: Option<Measurement48>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmr1: Option<Measurement48>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmr2: Option<Measurement48>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmr3: Option<Measurement48>,
}

/// TCB status values of Intel's TCB info collateral.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum TdxTcbStatus {
    UpToDate,
    SWHardeningNeeded,
    ConfigurationNeeded,
    ConfigurationAndSWHardeningNeeded,
    OutOfDate,
    OutOfDateConfigurationNeeded,
}

/// Evidence freshness.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Freshness {
    /// Maximum age of the evidence at verification time, e.g. `5m`.
    #[serde(default = "default_max_evidence_age")]
    #[schemars(regex(pattern = crate::common::DURATION_PATTERN))]
    pub max_evidence_age: Duration,
}

impl Default for Freshness {
    fn default() -> Self {
        Self {
            max_evidence_age: default_max_evidence_age(),
        }
    }
}

fn default_max_evidence_age() -> Duration {
    Duration::from(std::time::Duration::from_secs(300))
}

/// Where secrets may come from.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpenBaoEndpointRequirement {
    /// Accepted jurisdictions of the OpenBao endpoint (ISO 3166-1 alpha-2 codes or `EU`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_jurisdictions: Vec<Jurisdiction>,
    /// Endpoints whose TLS key is pinned; a connection presenting another key is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pinned_endpoints: Vec<PinnedEndpoint>,
}

/// A jurisdiction code.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(transparent)]
pub struct Jurisdiction(#[schemars(regex(pattern = r"^[A-Z]{2}$"))] pub String);

/// An OpenBao endpoint with its pinned TLS public key.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PinnedEndpoint {
    /// `https://` URL of the endpoint.
    #[schemars(regex(pattern = r"^https://[^\s/]+(:[0-9]+)?/?$"))]
    pub address: String,
    /// Lower-case hex sha256 of the server certificate's SubjectPublicKeyInfo.
    #[schemars(regex(pattern = r"^[a-f0-9]{64}$"))]
    pub spki_sha256: String,
    /// Jurisdiction the endpoint is declared to be in.
    pub jurisdiction: Jurisdiction,
}

/// Status of an AttestationRequirement, written by the controller.
pub type AttestationRequirementStatus = CommonStatus;
