//! What verification established, in the one shape key-release conditions read.
//!
//! Serialised as the CEL variable `attestation`:
//!
//! | field | what |
//! | --- | --- |
//! | `tee` | `sev-snp` or `tdx` |
//! | `snp.*` | the verified SEV-SNP report ([`SnpClaims`]; hex strings for byte fields) |
//! | `tdx.*` | the verified TDX quote ([`TdxClaims`]) |
//! | `pod` | `{uid, name, namespace}` of the pod the ServiceAccount token and report_data name |
//! | `serviceAccount` | `{name, namespace}` from the reviewed token |
//! | `openbao` | `{address, jurisdiction}` of the endpoint the secret is read from |
//!
//! The evidence fields come from verification; `pod`, `serviceAccount` and `openbao` are filled
//! by the relying party from what it checked itself (a token review, its own configuration),
//! never from what the pod claims.

use phantom_crds::TeeType;
use serde::Serialize;

/// A TEE type; the same values `AttestationRequirement.spec.teeTypes` accepts.
pub type Tee = TeeType;

/// Verified claims of one piece of evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Claims {
    pub tee: Tee,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snp: Option<SnpClaims>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tdx: Option<TdxClaims>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodClaims>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account: Option<ServiceAccountClaims>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub openbao: Option<OpenBaoClaims>,
}

impl Claims {
    pub fn snp(snp: SnpClaims) -> Self {
        Self {
            tee: TeeType::SevSnp,
            snp: Some(snp),
            tdx: None,
            pod: None,
            service_account: None,
            openbao: None,
        }
    }

    pub fn tdx(tdx: TdxClaims) -> Self {
        Self {
            tee: TeeType::Tdx,
            snp: None,
            tdx: Some(tdx),
            pod: None,
            service_account: None,
            openbao: None,
        }
    }

    /// The 64 bytes of report_data the evidence carries.
    pub fn report_data(&self) -> Vec<u8> {
        let hex = match (&self.snp, &self.tdx) {
            (Some(snp), _) => &snp.report_data,
            (_, Some(tdx)) => &tdx.report_data,
            _ => return Vec::new(),
        };
        hex::decode(hex).unwrap_or_default()
    }

    /// The claims as the CEL variable `attestation`.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("claims are plain data")
    }
}

/// SEV-SNP TCB components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct SnpTcb {
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
    /// Turin and later only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fmc: Option<u8>,
}

/// A verified SEV-SNP report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnpClaims {
    /// Product line of the AMD chain that endorsed it: `milan`, `genoa`, `turin`.
    pub product: String,
    pub version: u32,
    /// `vcek` or `vlek`.
    pub signing_key: String,
    pub measurement: String,
    pub host_data: String,
    pub report_data: String,
    pub family_id: String,
    pub image_id: String,
    pub id_key_digest: String,
    pub author_key_digest: String,
    pub guest_svn: u32,
    pub vmpl: u32,
    /// The guest policy, as a number.
    pub policy: u64,
    /// Guest policy bit 19.
    pub debug: bool,
    /// Guest policy bit 18: a migration agent may be associated.
    pub migrate_ma: bool,
    pub smt_allowed: bool,
    pub reported_tcb: SnpTcb,
    pub chip_id: String,
    /// The chip ID reads as zeros (MASK_CHIP_ID): the report is not bound to one chip.
    pub chip_id_masked: bool,
    /// The cloud provider a VLEK was issued to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlek_csp: Option<String>,
}

/// A verified TDX quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TdxClaims {
    /// Quote version (4 or 5).
    pub version: u16,
    pub mrtd: String,
    /// RTMR0..RTMR3.
    pub rtmrs: [String; 4],
    pub mr_config_id: String,
    pub mr_owner: String,
    pub mr_owner_config: String,
    pub mr_seam: String,
    pub tee_tcb_svn: String,
    pub td_attributes: String,
    /// TD_ATTRIBUTES bit 0.
    pub debug: bool,
    pub report_data: String,
    /// The TCB status Intel's collateral gives this platform, e.g. `UpToDate`.
    pub tcb_status: String,
    /// Intel security advisories that apply to it.
    pub advisories: Vec<String>,
    pub fmspc: String,
    pub platform: TdxPlatform,
}

/// Platform properties from the PCK certificate (Platform CA certificates only; `false` otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TdxPlatform {
    /// Packages can be added to the platform after provisioning.
    pub dynamic: bool,
    /// The platform's keys are cached by Intel's registration service.
    pub cached_keys: bool,
    /// Hyper-threading is enabled.
    pub smt: bool,
}

/// The pod the release is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodClaims {
    pub uid: String,
    pub name: String,
    pub namespace: String,
}

/// The ServiceAccount a reviewed token names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceAccountClaims {
    pub name: String,
    pub namespace: String,
}

/// The OpenBao endpoint the release reads from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenBaoClaims {
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jurisdiction: Option<String>,
    /// Lower-case hex SHA-256 of the endpoint's SubjectPublicKeyInfo.
    pub spki_sha256: String,
}
