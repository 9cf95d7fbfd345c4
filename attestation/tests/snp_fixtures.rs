//! Real SEV-SNP evidence (tests/data/snp, from virtee/sev and confidential-containers/trustee;
//! licences beside the data) verified or refused as its provenance says, with a fixed clock.

use std::path::PathBuf;

use phantom_attestation::Error;
use phantom_attestation::snp::{Roots, SnpVerifier};

/// 2025-07-01T00:00:00Z: inside every certificate's validity (the VLEK expired 2025-12-10).
const NOW: i64 = 1_751_328_000;

fn data(path: &str) -> Vec<u8> {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/snp")
        .join(path);
    std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

fn amd() -> SnpVerifier {
    SnpVerifier::new(Roots::amd().expect("the pinned AMD roots verify"))
}

#[test]
fn virtee_milan_report_verifies() {
    let report = hex::decode(
        String::from_utf8(data("virtee/report_milan.hex"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let claims = amd()
        .verify(&report, &data("virtee/vcek_milan.der"), NOW)
        .expect("the virtee Milan report verifies");
    assert_eq!(claims.product, "milan");
    assert_eq!(claims.signing_key, "vcek");
    assert!(!claims.debug);
    assert_eq!(claims.vmpl, 0);
    let tcb = claims.reported_tcb;
    // The README's 0x0300000000000873, read as the report's bytes: bootloader 3, tee 0, snp 8,
    // microcode 0x73; the VCEK's TCB extensions say the same (the verifier checked).
    assert_eq!(
        (tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode),
        (3, 0, 8, 0x73),
        "{tcb:?}"
    );
}

#[test]
fn trustee_milan_report_verifies_and_the_invalid_vceks_do_not() {
    let report = data("trustee/test-report.bin");
    let claims = amd()
        .verify(&report, &data("trustee/test-vcek.der"), NOW)
        .expect("trustee's test report verifies with its VCEK");
    assert_eq!(claims.product, "milan");
    for bad in [
        "trustee/test-vcek-invalid-legacy.der",
        "trustee/test-vcek-invalid-new.der",
    ] {
        let err = amd().verify(&report, &data(bad), NOW).expect_err(bad);
        eprintln!("{bad}: {err}");
    }
}

#[test]
fn vlek_report_verifies_through_the_asvk_from_the_collateral() {
    let report = data("trustee/test-vlek-report.bin");
    let vlek = data("trustee/test-vlek.der");
    let err = amd()
        .verify(&report, &vlek, NOW)
        .expect_err("no ASVK is pinned");
    assert!(matches!(err, Error::UnknownIssuer { .. }), "{err}");

    let mut roots = Roots::amd().unwrap();
    roots
        .add_intermediates(&data("trustee/milan_ask_ark_asvk.pem"))
        .expect("the ASVK chains to the Milan ARK");
    let verifier = SnpVerifier::new(roots);
    let claims = verifier
        .verify(&report, &vlek, NOW)
        .expect("the VLEK report verifies");
    assert_eq!(claims.signing_key, "vlek");
    assert_eq!(claims.vmpl, 1);
    assert!(claims.chip_id_masked);

    // 2025-12-11: the VLEK certificate has expired.
    let err = verifier
        .verify(&report, &vlek, 1_765_411_200)
        .expect_err("expired");
    assert!(matches!(err, Error::NotValidAt { .. }), "{err}");
}

#[test]
fn genoa_report_from_azure_evidence_verifies() {
    let evidence: serde_json::Value =
        serde_json::from_slice(&data("trustee/evidence-genoa.json")).unwrap();
    let report: Vec<u8> = evidence["report"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap() as u8)
        .collect();
    let vcek_pem = evidence["vcek"].as_str().unwrap();
    let vcek = x509_der(vcek_pem);
    let claims = amd()
        .verify(&report[32..32 + 1184], &vcek, NOW)
        .expect("the Genoa report verifies");
    assert_eq!(claims.product, "genoa");
}

#[test]
fn a_vcek_from_the_hosts_certificate_table_verifies_like_one_from_the_bundle() {
    use phantom_attestation::snp::cert_table::{self, Entry};
    let report = data("trustee/test-report.bin");
    let table = cert_table::build(&[
        (Entry::Ask, b"not a certificate"),
        (Entry::Vcek, &data("trustee/test-vcek.der")),
    ]);
    let vcek = cert_table::parse(&table)
        .unwrap()
        .into_iter()
        .find(|(e, _)| *e == Entry::Vcek)
        .map(|(_, der)| der)
        .unwrap();
    amd().verify(&report, &vcek, NOW).expect("verifies");
}

#[test]
fn turin_vcek_chains_to_the_turin_root() {
    let verifier = amd();
    assert_eq!(
        verifier
            .check_endorsement(&data("virtee/vcek_turin.der"), NOW)
            .unwrap(),
        "turin"
    );
}

fn x509_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64_decode(&body)
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}
