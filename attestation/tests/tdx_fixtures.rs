//! Real Intel quotes and collateral (tests/data/tdx, from Phala-Network/dcap-qvl; MIT licence
//! beside the data), verified or refused as their provenance says, at a fixed time.

use std::path::PathBuf;

use phantom_attestation::Reason;
use phantom_attestation::tdx::{TdxFailure, TdxVerifier};
use phantom_crds::{Advisory, Measurement48, TdxRequirement, TdxTcbStatus};

/// 2025-07-01T00:00:00Z, inside the collateral's window (2025-06-19 .. 2025-07-19).
const NOW: u64 = 1_751_328_000;

fn data(path: &str) -> Vec<u8> {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/tdx/dcap-qvl")
        .join(path);
    std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

fn requirement(statuses: &[TdxTcbStatus], advisories: &[&str]) -> TdxRequirement {
    TdxRequirement {
        mrtd: vec![Measurement48("00".repeat(48))],
        rtmrs: Vec::new(),
        accepted_tcb_statuses: statuses.to_vec(),
        allowed_advisories: advisories.iter().map(|a| Advisory((*a).into())).collect(),
    }
}

#[test]
fn tdx_quote_is_up_to_date() {
    let claims = TdxVerifier::intel()
        .verify(
            &data("tdx_quote"),
            &data("tdx_quote_collateral.json"),
            NOW,
            "prod-tdx",
            &requirement(&[TdxTcbStatus::UpToDate], &[]),
        )
        .expect("the TDX quote verifies");
    assert_eq!(claims.tcb_status, "UpToDate");
    assert!(claims.advisories.is_empty(), "{:?}", claims.advisories);
    assert_eq!(claims.mrtd.len(), 96);
    assert!(!claims.debug);
    eprintln!("mrtd {}\nrtmr0 {}", claims.mrtd, claims.rtmrs[0]);
}

#[test]
fn tdx_quote_outside_the_collateral_window_is_refused() {
    // 2025-08-01: the TCB info's nextUpdate has passed.
    let err = TdxVerifier::intel()
        .verify(
            &data("tdx_quote"),
            &data("tdx_quote_collateral.json"),
            1_754_006_400,
            "prod-tdx",
            &requirement(&[TdxTcbStatus::UpToDate], &[]),
        )
        .expect_err("expired collateral");
    assert!(matches!(err, TdxFailure::Invalid(_)), "{err}");
    eprintln!("{err}");
}

#[test]
fn outdated_tdx_quote_matches_no_tcb_level() {
    let err = TdxVerifier::intel()
        .verify(
            &data("tdx_quote_outdated"),
            &data("tdx_quote_outdated_collateral.json"),
            // 2026-03-01, inside this collateral's window (2026-02-18 .. 2026-03-20).
            1_772_323_200,
            "prod-tdx",
            &requirement(&[TdxTcbStatus::UpToDate, TdxTcbStatus::OutOfDate], &[]),
        )
        .expect_err("no TCB level");
    let message = format!("{err:#}");
    let chain = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    assert!(
        chain.contains("No matching TCB level found"),
        "{message} / {chain}"
    );
}

#[test]
fn sgx_quote_status_and_advisories_are_judged_then_it_is_refused_as_not_tdx() {
    let verify = |req: &TdxRequirement| {
        TdxVerifier::intel().verify(
            &data("sgx_quote"),
            &data("sgx_quote_collateral.json"),
            NOW,
            "prod-tdx",
            req,
        )
    };
    let err = verify(&requirement(&[TdxTcbStatus::UpToDate], &[])).expect_err("status");
    let TdxFailure::Refused(refusal) = &err else {
        panic!("{err}")
    };
    assert_eq!(refusal.field, "spec.tdx.acceptedTcbStatuses");
    assert!(
        matches!(&refusal.reason, Reason::TdxTcbStatus { found, .. } if found == "ConfigurationAndSWHardeningNeeded"),
        "{refusal}"
    );
    assert_eq!(
        refusal.to_string(),
        "TDX TCB status is ConfigurationAndSWHardeningNeeded; AttestationRequirement prod-tdx accepts UpToDate"
    );

    let status = [TdxTcbStatus::ConfigurationAndSWHardeningNeeded];
    let err = verify(&requirement(&status, &["INTEL-SA-00289"])).expect_err("advisory");
    let TdxFailure::Refused(refusal) = &err else {
        panic!("{err}")
    };
    assert!(
        matches!(&refusal.reason, Reason::TdxAdvisory { advisory } if advisory == "INTEL-SA-00615"),
        "{refusal}"
    );

    let err =
        verify(&requirement(&status, &["INTEL-SA-00289", "INTEL-SA-00615"])).expect_err("SGX");
    assert!(err.to_string().contains("not TDX"), "{err}");
}

#[test]
fn hostile_quotes_and_collateral_are_refused_clearly() {
    let verifier = TdxVerifier::intel();
    let req = requirement(&[TdxTcbStatus::UpToDate], &[]);
    let quote = data("tdx_quote");
    let collateral = data("tdx_quote_collateral.json");
    for (what, q, c) in [
        ("truncated quote", quote[..100].to_vec(), collateral.clone()),
        ("empty quote", Vec::new(), collateral.clone()),
        (
            "oversized quote",
            [
                quote.clone(),
                vec![0; phantom_attestation::tdx::MAX_QUOTE_LEN],
            ]
            .concat(),
            collateral.clone(),
        ),
        (
            "garbage collateral",
            quote.clone(),
            b"{\"not\": \"collateral\"}".to_vec(),
        ),
        (
            "SGX collateral for a TDX quote",
            quote.clone(),
            data("sgx_quote_collateral.json"),
        ),
    ] {
        let err = verifier
            .verify(&q, &c, NOW, "prod-tdx", &req)
            .expect_err(what);
        assert!(matches!(err, TdxFailure::Invalid(_)), "{what}: {err}");
        eprintln!("{what}: {err}");
    }
    let mut tampered = quote.clone();
    tampered[200] ^= 1;
    assert!(
        verifier
            .verify(&tampered, &collateral, NOW, "prod-tdx", &req)
            .is_err()
    );
}

#[test]
fn mrtd_rtmrs_and_tee_are_enforced_over_the_verified_quote() {
    use phantom_attestation::{Claims, requirement};
    use phantom_crds::{AttestationRequirementSpec, Freshness, RtmrSet, TeeType};

    let mut req = requirement(&[TdxTcbStatus::UpToDate], &[]);
    let tdx = TdxVerifier::intel()
        .verify(
            &data("tdx_quote"),
            &data("tdx_quote_collateral.json"),
            NOW,
            "prod-tdx",
            &req,
        )
        .unwrap();
    let claims = Claims::tdx(tdx.clone());
    let spec = |req: &TdxRequirement| AttestationRequirementSpec {
        tee_types: vec![TeeType::Tdx],
        sev_snp: None,
        tdx: Some(req.clone()),
        freshness: Freshness::default(),
        openbao: None,
        conditions: Vec::new(),
    };
    let refused = |req: &TdxRequirement| {
        requirement::check("prod-tdx", &spec(req), &claims, 0).expect_err("refused")
    };

    let r = refused(&req);
    assert_eq!(r.field, "spec.tdx.mrtd");
    assert!(
        r.to_string()
            .starts_with(&format!("TDX MRTD {} is not allowed", tdx.mrtd)),
        "{r}"
    );

    req.mrtd.push(Measurement48(tdx.mrtd.clone()));
    requirement::check("prod-tdx", &spec(&req), &claims, 0).expect("known MRTD, no RTMRs pinned");

    req.rtmrs = vec![
        RtmrSet {
            rtmr1: Some(Measurement48("00".repeat(48))),
            ..RtmrSet::default()
        },
        RtmrSet {
            rtmr0: Some(Measurement48(tdx.rtmrs[0].clone())),
            rtmr2: Some(Measurement48("11".repeat(48))),
            ..RtmrSet::default()
        },
    ];
    let r = refused(&req);
    assert!(
        matches!(
            &r.reason,
            Reason::TdxRtmrs {
                sets: 2,
                index: 1,
                ..
            }
        ),
        "{r}"
    );

    req.rtmrs.push(RtmrSet {
        rtmr0: Some(Measurement48(tdx.rtmrs[0].clone())),
        rtmr3: Some(Measurement48(tdx.rtmrs[3].clone())),
        ..RtmrSet::default()
    });
    requirement::check("prod-tdx", &spec(&req), &claims, 0).expect("the third set matches");

    let mut snp_only = spec(&req);
    snp_only.tee_types = vec![TeeType::SevSnp];
    assert!(matches!(
        requirement::check("prod-tdx", &snp_only, &claims, 0)
            .unwrap_err()
            .reason,
        Reason::TeeNotAccepted(_)
    ));
    assert_eq!(claims.to_value()["tdx"]["tcbStatus"], "UpToDate");
}
