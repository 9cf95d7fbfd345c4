//! AttestationRequirement: the TEE types it accepts have their settings, its pinned endpoints
//! are in its allowed jurisdictions, its extra conditions compile.

use phantom_crds::{AttestationRequirement, CompileError, TeeType};

use super::CompiledRequirement;
use super::errors::Errors;
use crate::expr::{Limits, Scope};

/// Compiles one requirement.
pub(super) fn compile(
    r: &AttestationRequirement,
    limits: &Limits,
) -> Result<CompiledRequirement, Vec<CompileError>> {
    let mut errors = Errors::default();
    let spec = &r.spec;
    if spec.tee_types.contains(&TeeType::SevSnp) && spec.sev_snp.is_none() {
        errors.push("spec.sevSnp", "teeTypes accepts sev-snp, so spec.sevSnp must say which measurements and TCB are accepted");
    }
    if spec.tee_types.contains(&TeeType::Tdx) && spec.tdx.is_none() {
        errors.push(
            "spec.tdx",
            "teeTypes accepts tdx, so spec.tdx must say which MRTD and TCB statuses are accepted",
        );
    }
    if let Some(openbao) = &spec.openbao {
        for (i, endpoint) in openbao.pinned_endpoints.iter().enumerate() {
            if !openbao.allowed_jurisdictions.is_empty()
                && !openbao
                    .allowed_jurisdictions
                    .contains(&endpoint.jurisdiction)
            {
                errors.push(
                    format!("spec.openbao.pinnedEndpoints[{i}].jurisdiction"),
                    format!(
                        "{} is not in allowedJurisdictions; the endpoint could never be used",
                        endpoint.jurisdiction.0
                    ),
                );
            }
        }
    }
    let conditions = errors.rules(
        "spec.conditions",
        &spec.conditions,
        Scope::Attestation,
        limits,
    );
    errors.finish(CompiledRequirement {
        object: r.clone(),
        conditions,
    })
}
