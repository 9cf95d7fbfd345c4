//! An `AttestationRequirement`'s structured fields, enforced over verified [`Claims`].
//!
//! Every field has its check here; the requirement's CEL `conditions` are evaluated by the policy
//! engine over the same claims ([`Claims::to_value`]). A refusal names the requirement, the field
//! and what the evidence showed, never a secret (evidence holds none).

use phantom_crds::{
    AttestationRequirementSpec, OpenBaoEndpointRequirement, SevSnpRequirement, TdxRequirement,
    TdxTcbStatus, TeeType,
};

use crate::claims::{Claims, OpenBaoClaims, SnpClaims, TdxClaims};

/// Evidence that verified but does not satisfy a requirement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}; AttestationRequirement {requirement} {}", reason.requires())]
pub struct Refusal {
    /// The AttestationRequirement's name.
    pub requirement: String,
    /// The spec field that refused, e.g. `spec.sevSnp.allowDebug`.
    pub field: &'static str,
    pub reason: Reason,
}

/// What about the evidence a requirement refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    #[error("the evidence is {0}")]
    TeeNotAccepted(String),
    #[error("the requirement has no settings for {0}")]
    NoSettings(&'static str),
    #[error("evidence is {age_seconds}s old")]
    Stale { age_seconds: u64, max_seconds: u64 },
    #[error("SEV-SNP report has debug=1")]
    SnpDebug,
    #[error("SEV-SNP report's guest policy allows a migration agent (MIGRATE_MA=1)")]
    SnpMigrationAgent,
    #[error("SEV-SNP report is from VMPL {found}")]
    SnpVmpl { found: u32, required: u8 },
    #[error("TCB {component}={found} below the required {required}")]
    SnpTcb {
        component: &'static str,
        found: u8,
        required: u8,
    },
    #[error("SEV-SNP launch measurement {found} is not allowed")]
    SnpMeasurement { found: String },
    #[error("TDX quote is from a debug TD (TD_ATTRIBUTES.DEBUG=1)")]
    TdxDebug,
    #[error("TDX MRTD {found} is not allowed")]
    TdxMrtd { found: String },
    #[error(
        "TDX RTMRs match none of the {sets} allowed sets (first difference: RTMR{index} is {found})"
    )]
    TdxRtmrs {
        sets: usize,
        index: usize,
        found: String,
    },
    #[error("TDX TCB status is {found}")]
    TdxTcbStatus {
        found: String,
        accepted: Vec<String>,
    },
    #[error("TDX platform has advisory {advisory}")]
    TdxAdvisory { advisory: String },
    #[error("the release names no OpenBao endpoint")]
    NoEndpoint,
    #[error("OpenBao endpoint {address} is in jurisdiction {found}")]
    Jurisdiction { address: String, found: String },
    #[error("OpenBao endpoint {address} has no declared jurisdiction")]
    UnknownJurisdiction { address: String },
    #[error("OpenBao endpoint {address} is not pinned")]
    EndpointNotPinned { address: String },
    #[error("OpenBao endpoint {address} presents key {found}")]
    SpkiMismatch { address: String, found: String },
}

impl Reason {
    /// What the requirement asks, completing the sentence "AttestationRequirement X ...".
    fn requires(&self) -> String {
        match self {
            Self::TeeNotAccepted(_) => "does not accept it (spec.teeTypes)".into(),
            Self::NoSettings(_) => "cannot be applied; fix the requirement".into(),
            Self::Stale { max_seconds, .. } => {
                format!("accepts evidence at most {max_seconds}s old; retry with a fresh challenge")
            }
            Self::SnpDebug => "forbids debug".into(),
            Self::SnpMigrationAgent => {
                "does not accept migratable guests (a migration agent can read guest memory)".into()
            }
            Self::SnpVmpl { required, .. } => format!("requires VMPL {required}"),
            Self::SnpTcb { .. } => "sets that minimum (spec.sevSnp.minTcb)".into(),
            Self::SnpMeasurement { .. } => {
                "lists the measurements it accepts (spec.sevSnp.measurements)".into()
            }
            Self::TdxDebug => "forbids debug".into(),
            Self::TdxMrtd { .. } => "lists the MRTDs it accepts (spec.tdx.mrtd)".into(),
            Self::TdxRtmrs { .. } => "pins the RTMRs (spec.tdx.rtmrs)".into(),
            Self::TdxTcbStatus { accepted, .. } => format!("accepts {}", accepted.join(", ")),
            Self::TdxAdvisory { .. } => {
                "tolerates only the advisories in spec.tdx.allowedAdvisories".into()
            }
            Self::NoEndpoint => "constrains the endpoint (spec.openbao)".into(),
            Self::Jurisdiction { .. } | Self::UnknownJurisdiction { .. } => {
                "allows only the jurisdictions in spec.openbao.allowedJurisdictions".into()
            }
            Self::EndpointNotPinned { .. } => {
                "accepts only the endpoints in spec.openbao.pinnedEndpoints".into()
            }
            Self::SpkiMismatch { .. } => "pins another key for it".into(),
        }
    }
}

/// Checks every structured field of `spec` (the requirement named `name`) against `claims`,
/// whose evidence is `age_seconds` old (since the broker issued the challenge it binds).
pub fn check(
    name: &str,
    spec: &AttestationRequirementSpec,
    claims: &Claims,
    age_seconds: u64,
) -> Result<(), Refusal> {
    let refuse = |field, reason| Refusal {
        requirement: name.to_owned(),
        field,
        reason,
    };
    if !spec.tee_types.contains(&claims.tee) {
        return Err(refuse(
            "spec.teeTypes",
            Reason::TeeNotAccepted(tee_name(claims.tee).into()),
        ));
    }
    let max_seconds = std::time::Duration::from(spec.freshness.max_evidence_age).as_secs();
    if age_seconds > max_seconds {
        return Err(refuse(
            "spec.freshness.maxEvidenceAge",
            Reason::Stale {
                age_seconds,
                max_seconds,
            },
        ));
    }
    match (claims.tee, &claims.snp, &claims.tdx) {
        (TeeType::SevSnp, Some(snp), _) => {
            let Some(req) = &spec.sev_snp else {
                return Err(refuse("spec.sevSnp", Reason::NoSettings("SEV-SNP")));
            };
            check_snp(req, snp).map_err(|(field, reason)| refuse(field, reason))?;
        }
        (TeeType::Tdx, _, Some(tdx)) => {
            let Some(req) = &spec.tdx else {
                return Err(refuse("spec.tdx", Reason::NoSettings("TDX")));
            };
            check_tdx(req, tdx).map_err(|(field, reason)| refuse(field, reason))?;
        }
        (tee, _, _) => {
            return Err(refuse(
                "spec.teeTypes",
                Reason::TeeNotAccepted(format!("{} without its verified report", tee_name(tee))),
            ));
        }
    }
    if let Some(req) = &spec.openbao {
        check_openbao(req, claims.openbao.as_ref())
            .map_err(|(field, reason)| refuse(field, reason))?;
    }
    Ok(())
}

fn tee_name(tee: TeeType) -> &'static str {
    match tee {
        TeeType::SevSnp => "sev-snp",
        TeeType::Tdx => "tdx",
    }
}

type Failure = (&'static str, Reason);

fn check_snp(req: &SevSnpRequirement, snp: &SnpClaims) -> Result<(), Failure> {
    if snp.debug && !req.allow_debug {
        return Err(("spec.sevSnp.allowDebug", Reason::SnpDebug));
    }
    if snp.migrate_ma {
        return Err(("spec.sevSnp", Reason::SnpMigrationAgent));
    }
    if let Some(required) = req.vmpl
        && snp.vmpl != u32::from(required)
    {
        return Err((
            "spec.sevSnp.vmpl",
            Reason::SnpVmpl {
                found: snp.vmpl,
                required,
            },
        ));
    }
    let tcb = &snp.reported_tcb;
    let min = &req.min_tcb;
    for (component, found, required) in [
        ("bootloader", tcb.bootloader, min.bootloader),
        ("tee", tcb.tee, min.tee),
        ("snp", tcb.snp, min.snp),
        ("microcode", tcb.microcode, min.microcode),
    ] {
        if found < required {
            return Err((
                "spec.sevSnp.minTcb",
                Reason::SnpTcb {
                    component,
                    found,
                    required,
                },
            ));
        }
    }
    if !req.measurements.iter().any(|m| m.0 == snp.measurement) {
        return Err((
            "spec.sevSnp.measurements",
            Reason::SnpMeasurement {
                found: snp.measurement.clone(),
            },
        ));
    }
    Ok(())
}

/// The TCB part of a TDX requirement: status and advisories. Also applied inside dcap-qvl's
/// policy step ([`crate::tdx`]), so a quote the requirement refuses is never reported verified.
pub(crate) fn check_tdx_tcb(
    req: &TdxRequirement,
    status: &str,
    advisories: &[String],
) -> Result<(), Failure> {
    let accepted: Vec<String> = req
        .accepted_tcb_statuses
        .iter()
        .map(|s| status_name(*s).to_owned())
        .collect();
    if !accepted.iter().any(|a| a == status) {
        return Err((
            "spec.tdx.acceptedTcbStatuses",
            Reason::TdxTcbStatus {
                found: status.to_owned(),
                accepted,
            },
        ));
    }
    if let Some(advisory) = advisories.iter().find(|a| {
        !req.allowed_advisories
            .iter()
            .any(|allowed| allowed.0.eq_ignore_ascii_case(a))
    }) {
        return Err((
            "spec.tdx.allowedAdvisories",
            Reason::TdxAdvisory {
                advisory: advisory.clone(),
            },
        ));
    }
    Ok(())
}

fn status_name(status: TdxTcbStatus) -> &'static str {
    match status {
        TdxTcbStatus::UpToDate => "UpToDate",
        TdxTcbStatus::SWHardeningNeeded => "SWHardeningNeeded",
        TdxTcbStatus::ConfigurationNeeded => "ConfigurationNeeded",
        TdxTcbStatus::ConfigurationAndSWHardeningNeeded => "ConfigurationAndSWHardeningNeeded",
        TdxTcbStatus::OutOfDate => "OutOfDate",
        TdxTcbStatus::OutOfDateConfigurationNeeded => "OutOfDateConfigurationNeeded",
    }
}

fn check_tdx(req: &TdxRequirement, tdx: &TdxClaims) -> Result<(), Failure> {
    if tdx.debug {
        return Err(("spec.tdx", Reason::TdxDebug));
    }
    if !req.mrtd.iter().any(|m| m.0 == tdx.mrtd) {
        return Err((
            "spec.tdx.mrtd",
            Reason::TdxMrtd {
                found: tdx.mrtd.clone(),
            },
        ));
    }
    if !req.rtmrs.is_empty() {
        let mut first_difference = None;
        let matched = req.rtmrs.iter().any(|set| {
            let expected = [&set.rtmr0, &set.rtmr1, &set.rtmr2, &set.rtmr3];
            let difference = expected
                .iter()
                .enumerate()
                .find(|(i, e)| e.as_ref().is_some_and(|e| e.0 != tdx.rtmrs[*i]));
            if let (Some((i, _)), None) = (difference, first_difference) {
                first_difference = Some(i);
            }
            difference.is_none()
        });
        if !matched {
            let index = first_difference.unwrap_or(0);
            return Err((
                "spec.tdx.rtmrs",
                Reason::TdxRtmrs {
                    sets: req.rtmrs.len(),
                    index,
                    found: tdx.rtmrs[index].clone(),
                },
            ));
        }
    }
    check_tdx_tcb(req, &tdx.tcb_status, &tdx.advisories)
}

fn check_openbao(
    req: &OpenBaoEndpointRequirement,
    endpoint: Option<&OpenBaoClaims>,
) -> Result<(), Failure> {
    if req.allowed_jurisdictions.is_empty() && req.pinned_endpoints.is_empty() {
        return Ok(());
    }
    let Some(endpoint) = endpoint else {
        return Err(("spec.openbao", Reason::NoEndpoint));
    };
    let address = endpoint.address.trim_end_matches('/');
    let pinned = req
        .pinned_endpoints
        .iter()
        .find(|p| p.address.trim_end_matches('/') == address);
    if !req.pinned_endpoints.is_empty() {
        let Some(pinned) = pinned else {
            return Err((
                "spec.openbao.pinnedEndpoints",
                Reason::EndpointNotPinned {
                    address: address.to_owned(),
                },
            ));
        };
        if pinned.spki_sha256 != endpoint.spki_sha256 {
            return Err((
                "spec.openbao.pinnedEndpoints",
                Reason::SpkiMismatch {
                    address: address.to_owned(),
                    found: endpoint.spki_sha256.clone(),
                },
            ));
        }
    }
    if !req.allowed_jurisdictions.is_empty() {
        // The pinned entry's declaration wins over the endpoint's own claim.
        let jurisdiction = pinned
            .map(|p| p.jurisdiction.0.clone())
            .or_else(|| endpoint.jurisdiction.clone());
        let Some(found) = jurisdiction else {
            return Err((
                "spec.openbao.allowedJurisdictions",
                Reason::UnknownJurisdiction {
                    address: address.to_owned(),
                },
            ));
        };
        if !req.allowed_jurisdictions.iter().any(|j| j.0 == found) {
            return Err((
                "spec.openbao.allowedJurisdictions",
                Reason::Jurisdiction {
                    address: address.to_owned(),
                    found,
                },
            ));
        }
    }
    Ok(())
}
