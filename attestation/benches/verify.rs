//! Verification figures: an SEV-SNP report against a cached chain (real Milan fixture), a TDX
//! quote with its collateral (real fixture), and building the claims and checking a requirement.
//! Prints percentiles; asserts nothing.
//!
//! `cargo bench -p phantom-attestation --bench verify`

use std::path::PathBuf;
use std::time::Instant;

use phantom_testkit::bench::{percentiles, time};

use phantom_attestation::snp::{Roots, SnpVerifier};
use phantom_attestation::tdx::TdxVerifier;
use phantom_attestation::{Claims, requirement};
use phantom_crds::{
    AttestationRequirementSpec, Freshness, Measurement48, SevSnpRequirement, TdxRequirement,
    TdxTcbStatus, TeeType,
};

fn data(path: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(path),
    )
    .expect("fixture")
}

fn main() {
    // Fixed clocks inside the fixtures' validity (see tests/snp_fixtures.rs, tests/tdx_fixtures.rs).
    const NOW: i64 = 1_751_328_000;

    let started = Instant::now();
    let roots = Roots::amd().expect("pinned roots");
    println!(
        "{:<52} {:>9.2?}",
        "load and check the pinned AMD roots (once)",
        started.elapsed()
    );
    let snp = SnpVerifier::new(roots);
    let report = data("snp/trustee/test-report.bin");
    let vcek = data("snp/trustee/test-vcek.der");
    percentiles(
        "SEV-SNP report, cached chain (VCEK + report)",
        time(2000, || {
            drop(snp.verify(&report, &vcek, NOW).expect("verifies"))
        }),
    );

    let endorsement = snp
        .endorsement(&vcek, NOW)
        .expect("the VCEK chains to AMD's root");
    percentiles(
        "SEV-SNP report, VCEK checked at collateral load",
        time(2000, || {
            drop(
                snp.verify_endorsed(&report, &endorsement, NOW)
                    .expect("verifies"),
            )
        }),
    );

    let claims = Claims::snp(snp.verify(&report, &vcek, NOW).unwrap());
    let spec = AttestationRequirementSpec {
        tee_types: vec![TeeType::SevSnp],
        sev_snp: Some(SevSnpRequirement {
            measurements: vec![Measurement48(
                claims.snp.as_ref().unwrap().measurement.clone(),
            )],
            ..SevSnpRequirement::default()
        }),
        tdx: None,
        freshness: Freshness::default(),
        openbao: None,
        conditions: Vec::new(),
    };
    percentiles(
        "requirement check + claims as a CEL value",
        time(20000, || {
            requirement::check("bench", &spec, &claims, 1).expect("passes");
            drop(claims.to_value());
        }),
    );

    let tdx = TdxVerifier::intel();
    let quote = data("tdx/dcap-qvl/tdx_quote");
    let collateral = data("tdx/dcap-qvl/tdx_quote_collateral.json");
    let req = TdxRequirement {
        mrtd: vec![Measurement48("00".repeat(48))],
        accepted_tcb_statuses: vec![TdxTcbStatus::UpToDate],
        ..TdxRequirement::default()
    };
    percentiles(
        "TDX quote + collateral (parse, chain, CRLs, TCB, policy)",
        time(500, || {
            drop(
                tdx.verify(&quote, &collateral, NOW as u64, "bench", &req)
                    .expect("verifies"),
            )
        }),
    );
}
