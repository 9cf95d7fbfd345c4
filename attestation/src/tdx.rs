//! Intel TDX quote verification, offline, with `dcap-qvl`.
//!
//! Always through `verify_with_policy`, never the plain `verify()` (which applies no policy): the
//! policy step refuses a TCB status or advisory the requirement does not accept, then applies
//! dcap-qvl's strict defaults (collateral not expired, platform and QE TCB not out of date, no
//! dynamic platform, cached keys or SMT flags). Debug TDs are refused by the verifier itself.
//! The collateral (PCK chain and CRLs, TCB info, QE identity) is the operator's offline bundle in
//! Intel PCS's `QuoteCollateralV3` JSON shape; nothing is fetched. (`tdx-attest-rs` is not on
//! crates.io; evidence is collected through configfs-tsm, [`crate::tsm`].)

use std::cell::RefCell;

use dcap_qvl::QuoteCollateralV3;
use dcap_qvl::policy::{PckCertFlag, Policy, QuoteClaims, QuotePolicy};
use dcap_qvl::quote::Report;
use dcap_qvl::verify::QuoteVerifier;
use phantom_crds::{TdxRequirement, TdxTcbStatus};

use crate::claims::{TdxClaims, TdxPlatform};
use crate::requirement::{Refusal, check_tdx_tcb};
use crate::{Error, Result};

const TEE_TYPE_TDX: u32 = 0x81;
/// Larger than any quote (a v4 quote with its PCK chain is about 5 KiB); refused before parsing.
pub const MAX_QUOTE_LEN: usize = 32 * 1024;
/// Larger than any QuoteCollateralV3 document (about 16 KiB).
pub const MAX_COLLATERAL_LEN: usize = 256 * 1024;

/// The FMSPC (upper-case hex) of the platform a quote comes from, read from its PCK certificate:
/// what selects the quote's collateral.
pub fn fmspc(quote: &[u8]) -> Result<String> {
    if quote.len() > MAX_QUOTE_LEN {
        return Err(Error::Malformed {
            what: "TDX quote",
            reason: format!(
                "{} bytes, more than the {MAX_QUOTE_LEN} any genuine one has",
                quote.len()
            ),
        });
    }
    let parsed = dcap_qvl::quote::Quote::parse(quote).map_err(|source| Error::Tdx {
        source: source.into(),
    })?;
    let fmspc = dcap_qvl::intel::quote_fmspc(&parsed).map_err(|source| Error::Tdx {
        source: source.into(),
    })?;
    Ok(hex::encode_upper(fmspc))
}

/// Verifies TDX quotes against Intel's SGX/TDX root CA (or a test root).
pub struct TdxVerifier {
    verifier: QuoteVerifier,
}

impl std::fmt::Debug for TdxVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TdxVerifier").finish_non_exhaustive()
    }
}

/// A quote that verified but whose TCB the requirement refuses, or a verification failure.
#[derive(Debug, thiserror::Error)]
pub enum TdxFailure {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Invalid(#[from] Error),
}

impl TdxVerifier {
    /// Intel's production root (the one dcap-qvl pins).
    pub fn intel() -> Self {
        Self {
            verifier: QuoteVerifier::new_prod(),
        }
    }

    /// Verifies `quote` with `collateral` (QuoteCollateralV3 JSON) at `now` (unix seconds),
    /// applying the TCB part of `requirement` (named `name`) in dcap-qvl's policy step.
    pub fn verify(
        &self,
        quote: &[u8],
        collateral: &[u8],
        now: u64,
        name: &str,
        requirement: &TdxRequirement,
    ) -> Result<TdxClaims, TdxFailure> {
        for (what, len, max) in [
            ("TDX quote", quote.len(), MAX_QUOTE_LEN),
            ("TDX collateral", collateral.len(), MAX_COLLATERAL_LEN),
        ] {
            if len > max {
                return Err(Error::Malformed {
                    what,
                    reason: format!("{len} bytes, more than the {max} any genuine one has"),
                }
                .into());
            }
        }
        let collateral: QuoteCollateralV3 =
            serde_json::from_slice(collateral).map_err(|source| Error::TdxCollateral { source })?;
        let policy = RequirementPolicy::new(now, name, requirement);
        let claims = match self
            .verifier
            .verify_with_policy(quote, collateral, now, &policy)
        {
            Ok(claims) => claims,
            Err(source) => {
                if let Some(refusal) = policy.refusal.into_inner() {
                    return Err(refusal.into());
                }
                return Err(Error::Tdx {
                    source: source.into(),
                }
                .into());
            }
        };
        if claims.tee_type != TEE_TYPE_TDX {
            return Err(Error::NotTdx {
                tee_type: claims.tee_type,
            }
            .into());
        }
        let report = match &claims.report {
            Report::TD10(r) => r,
            Report::TD15(r) => &r.base,
            Report::TD15Ex(r) => &r.base.base,
            Report::SgxEnclave(_) => {
                return Err(Error::NotTdx {
                    tee_type: claims.tee_type,
                }
                .into());
            }
        };
        Ok(TdxClaims {
            version: claims.header.version,
            mrtd: hex::encode(report.mr_td),
            rtmrs: [
                hex::encode(report.rt_mr0),
                hex::encode(report.rt_mr1),
                hex::encode(report.rt_mr2),
                hex::encode(report.rt_mr3),
            ],
            mr_config_id: hex::encode(report.mr_config_id),
            mr_owner: hex::encode(report.mr_owner),
            mr_owner_config: hex::encode(report.mr_owner_config),
            mr_seam: hex::encode(report.mr_seam),
            tee_tcb_svn: hex::encode(report.tee_tcb_svn),
            td_attributes: hex::encode(report.td_attributes),
            debug: report.td_attributes[0] & 1 == 1,
            report_data: hex::encode(report.report_data),
            tcb_status: claims.tcb.status.to_string(),
            advisories: claims.tcb.advisory_ids.clone(),
            fmspc: hex::encode(claims.platform.pck.fmspc),
            platform: TdxPlatform {
                dynamic: flag(claims.platform.pck.dynamic_platform),
                cached_keys: flag(claims.platform.pck.cached_keys),
                smt: flag(claims.platform.pck.smt_enabled),
            },
        })
    }
}

/// A PCK certificate flag; absent (Processor CA certificates) reads as `false`.
fn flag(flag: PckCertFlag) -> bool {
    flag == PckCertFlag::True
}

/// The requirement's TCB rules first (so their refusal is typed and precise), then dcap-qvl's
/// strict policy allowing exactly the requirement's statuses.
struct RequirementPolicy<'a> {
    name: &'a str,
    requirement: &'a TdxRequirement,
    base: QuotePolicy,
    refusal: RefCell<Option<Refusal>>,
}

impl<'a> RequirementPolicy<'a> {
    fn new(now: u64, name: &'a str, requirement: &'a TdxRequirement) -> Self {
        // Dynamic platforms, cached keys and SMT are how cloud TDX hosts are built (the real
        // quote in tests/data comes from one); the requirement has no field for them, so they are
        // reported in the claims (`tdx.platform`) for a CEL condition to refuse instead.
        let mut base = QuotePolicy::strict(now)
            .allow_dynamic_platform(true)
            .allow_cached_keys(true)
            .allow_smt(true);
        for status in &requirement.accepted_tcb_statuses {
            base = base.allow_status(qvl_status(*status));
        }
        Self {
            name,
            requirement,
            base,
            refusal: RefCell::new(None),
        }
    }
}

impl Policy for RequirementPolicy<'_> {
    fn validate(&self, data: &QuoteClaims) -> anyhow::Result<()> {
        let status = data.tcb.status.to_string();
        if let Err((field, reason)) =
            check_tdx_tcb(self.requirement, &status, &data.tcb.advisory_ids)
        {
            let refusal = Refusal {
                requirement: self.name.to_owned(),
                field,
                reason,
            };
            let message = refusal.to_string();
            *self.refusal.borrow_mut() = Some(refusal);
            return Err(anyhow::Error::msg(message));
        }
        self.base.validate(data)
    }
}

fn qvl_status(status: TdxTcbStatus) -> dcap_qvl::tcb_info::TcbStatus {
    use dcap_qvl::tcb_info::TcbStatus as Q;
    match status {
        TdxTcbStatus::UpToDate => Q::UpToDate,
        TdxTcbStatus::SWHardeningNeeded => Q::SWHardeningNeeded,
        TdxTcbStatus::ConfigurationNeeded => Q::ConfigurationNeeded,
        TdxTcbStatus::ConfigurationAndSWHardeningNeeded => Q::ConfigurationAndSWHardeningNeeded,
        TdxTcbStatus::OutOfDate => Q::OutOfDate,
        TdxTcbStatus::OutOfDateConfigurationNeeded => Q::OutOfDateConfigurationNeeded,
    }
}
