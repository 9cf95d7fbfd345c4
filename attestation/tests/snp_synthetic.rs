//! Every SEV-SNP verification and policy branch, with reports signed by a test chain
//! (tests/data/synthetic, made by its generate.sh) that is trusted only because these tests
//! configure its root.

use phantom_attestation::claims::{Claims, OpenBaoClaims};
use phantom_attestation::emulator::SnpReportBuilder;
use phantom_attestation::report_data::Binding;
use phantom_attestation::snp::{Roots, SnpVerifier};
use phantom_attestation::{Error, Reason, requirement};
use phantom_crds::{
    AttestationRequirementSpec, Freshness, Jurisdiction, Measurement48, OpenBaoEndpointRequirement,
    PinnedEndpoint, SevSnpRequirement, SnpTcb, TeeType,
};

mod common;

use common::{NOW, chip, data};

const MEASUREMENT: [u8; 48] = [0x5a; 48];

fn verifier() -> SnpVerifier {
    common::synthetic_verifier()
}

fn binding() -> Binding<'static> {
    Binding {
        nonce: [7; 32],
        public_key: [8; 32],
        openbao_spki_sha256: [9; 32],
        pod_uid: "0b8e5c1e-6f5d-4a55-9a3e-2f9c8d7e6b5a",
    }
}

fn report() -> SnpReportBuilder {
    SnpReportBuilder::milan(chip("a"))
        .measurement(MEASUREMENT)
        .report_data(binding().report_data())
}

fn sign(builder: SnpReportBuilder) -> Vec<u8> {
    builder.sign(&data("synthetic/vcek-a.pk8"))
}

fn verify(report: &[u8]) -> Result<Claims, Error> {
    verifier()
        .verify(report, &data("synthetic/vcek-a.der"), NOW)
        .map(Claims::snp)
}

fn prod_snp() -> AttestationRequirementSpec {
    AttestationRequirementSpec {
        tee_types: vec![TeeType::SevSnp],
        sev_snp: Some(SevSnpRequirement {
            measurements: vec![Measurement48(hex::encode(MEASUREMENT))],
            min_tcb: SnpTcb {
                bootloader: 3,
                tee: 0,
                snp: 8,
                microcode: 209,
            },
            allow_debug: false,
            vmpl: Some(0),
        }),
        tdx: None,
        freshness: Freshness::default(),
        openbao: None,
        conditions: Vec::new(),
    }
}

fn refusal(spec: &AttestationRequirementSpec, claims: &Claims, age: u64) -> requirement::Refusal {
    requirement::check("prod-snp", spec, claims, age).expect_err("refused")
}

#[test]
fn a_good_report_verifies_binds_its_values_and_satisfies_the_requirement() {
    let claims = verify(&sign(report())).expect("verifies");
    assert!(binding().matches(&claims.report_data()));
    requirement::check("prod-snp", &prod_snp(), &claims, 10).expect("satisfies prod-snp");
    let value = claims.to_value();
    assert_eq!(value["tee"], "sev-snp");
    assert_eq!(value["snp"]["measurement"], hex::encode(MEASUREMENT));
    assert_eq!(value["snp"]["reportedTcb"]["microcode"], 209);
}

#[test]
fn debug_is_refused_unless_allowed() {
    let claims = verify(&sign(report().debug(true))).expect("a debug report still verifies");
    let r = refusal(&prod_snp(), &claims, 0);
    assert_eq!(r.field, "spec.sevSnp.allowDebug");
    assert_eq!(
        r.to_string(),
        "SEV-SNP report has debug=1; AttestationRequirement prod-snp forbids debug"
    );
    let mut lenient = prod_snp();
    lenient.sev_snp.as_mut().unwrap().allow_debug = true;
    requirement::check("dev-snp", &lenient, &claims, 0).expect("allowDebug accepts it");
}

#[test]
fn a_migratable_guest_is_refused() {
    let claims = verify(&sign(report().migrate_ma(true))).unwrap();
    assert_eq!(
        refusal(&prod_snp(), &claims, 0).reason,
        Reason::SnpMigrationAgent
    );
}

#[test]
fn the_wrong_vmpl_is_refused() {
    let claims = verify(&sign(report().vmpl(2))).unwrap();
    let r = refusal(&prod_snp(), &claims, 0);
    assert_eq!(
        r.reason,
        Reason::SnpVmpl {
            found: 2,
            required: 0
        }
    );
    assert_eq!(
        r.to_string(),
        "SEV-SNP report is from VMPL 2; AttestationRequirement prod-snp requires VMPL 0"
    );
    let mut any_vmpl = prod_snp();
    any_vmpl.sev_snp.as_mut().unwrap().vmpl = None;
    requirement::check("prod-snp", &any_vmpl, &claims, 0).expect("no vmpl: any");
}

#[test]
fn a_tcb_below_the_minimum_is_refused_for_each_component() {
    let claims = verify(&sign(report())).unwrap();
    for (component, bump) in [
        (
            "bootloader",
            SnpTcb {
                bootloader: 4,
                ..Default::default()
            },
        ),
        (
            "tee",
            SnpTcb {
                tee: 1,
                ..Default::default()
            },
        ),
        (
            "snp",
            SnpTcb {
                snp: 9,
                ..Default::default()
            },
        ),
        (
            "microcode",
            SnpTcb {
                microcode: 210,
                ..Default::default()
            },
        ),
    ] {
        let mut spec = prod_snp();
        spec.sev_snp.as_mut().unwrap().min_tcb = bump;
        let r = refusal(&spec, &claims, 0);
        assert!(
            matches!(r.reason, Reason::SnpTcb { component: c, .. } if c == component),
            "{component}: {r}"
        );
    }
    let mut spec = prod_snp();
    spec.sev_snp.as_mut().unwrap().min_tcb.snp = 9;
    assert_eq!(
        refusal(&spec, &claims, 0).to_string(),
        "TCB snp=8 below the required 9; AttestationRequirement prod-snp sets that minimum (spec.sevSnp.minTcb)"
    );
}

#[test]
fn a_report_claiming_another_tcb_than_its_vcek_is_refused() {
    let err = verify(&sign(report().reported_tcb(3, 0, 9, 209))).expect_err("tcb");
    assert!(
        matches!(
            err,
            Error::TcbMismatch {
                component: "snp",
                certificate: 8,
                report: 9
            }
        ),
        "{err}"
    );
}

#[test]
fn an_unknown_measurement_is_refused() {
    let claims = verify(&sign(report().measurement([0x11; 48]))).unwrap();
    let r = refusal(&prod_snp(), &claims, 0);
    assert_eq!(r.field, "spec.sevSnp.measurements");
    assert!(r.to_string().contains(&"11".repeat(48)), "{r}");
}

#[test]
fn stale_evidence_is_refused() {
    let claims = verify(&sign(report())).unwrap();
    requirement::check("prod-snp", &prod_snp(), &claims, 300).expect("exactly maxEvidenceAge");
    let r = refusal(&prod_snp(), &claims, 301);
    assert_eq!(
        r.to_string(),
        "evidence is 301s old; AttestationRequirement prod-snp accepts evidence at most 300s old; retry with a fresh challenge"
    );
}

#[test]
fn report_data_for_other_values_does_not_bind() {
    let other = Binding {
        pod_uid: "another-pod",
        ..binding()
    };
    let claims = verify(&sign(report().report_data(other.report_data()))).unwrap();
    assert!(!binding().matches(&claims.report_data()));
}

#[test]
fn a_vcek_of_another_chip_is_refused() {
    let report = sign(report());
    let err = verifier()
        .verify(&report, &data("synthetic/vcek-b.der"), NOW)
        .expect_err("chip b's VCEK");
    assert!(matches!(err, Error::ChipMismatch), "{err}");
    // Chip b's key signing a report that claims to be chip a: refused the same way.
    let forged = SnpReportBuilder::milan(chip("a"))
        .measurement(MEASUREMENT)
        .sign(&data("synthetic/vcek-b.pk8"));
    let err = verifier()
        .verify(&forged, &data("synthetic/vcek-a.der"), NOW)
        .expect_err("forged");
    assert!(matches!(err, Error::BadSignature { .. }), "{err}");
}

#[test]
fn a_tampered_report_is_refused() {
    let mut report = sign(report());
    report[0x90] ^= 1;
    let err = verify(&report).expect_err("tampered");
    assert!(matches!(err, Error::BadSignature { .. }), "{err}");
}

#[test]
fn versions_algorithms_and_key_kinds_are_checked() {
    assert!(matches!(
        verify(&sign(report().version(1))),
        Err(Error::ReportVersion { version: 1 })
    ));
    assert!(matches!(
        verify(&sign(report().signature_algorithm(2))),
        Err(Error::SignatureAlgorithm { algorithm: 2 })
    ));
    let err = verify(&sign(report().signing_key(1))).expect_err("VLEK-signed but a VCEK given");
    assert!(
        matches!(
            err,
            Error::EndorsementKind {
                expected: "VLEK",
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        verify(&sign(report().signing_key(7))),
        Err(Error::Unsigned(7))
    ));
}

#[test]
fn a_chain_nobody_configured_is_not_trusted() {
    let amd = SnpVerifier::new(Roots::amd().unwrap());
    let err = amd
        .verify(&sign(report()), &data("synthetic/vcek-a.der"), NOW)
        .expect_err("the test chain is not AMD's");
    assert!(matches!(err, Error::UnknownIssuer { .. }), "{err}");
    // An ASK of one root cannot be slipped in under another.
    let mut roots = Roots::amd().unwrap();
    let err = roots
        .add_intermediates(&data("synthetic/ask.pem"))
        .expect_err("foreign ASK");
    assert!(matches!(err, Error::UnknownIssuer { .. }), "{err}");
}

#[test]
fn certificates_outside_their_validity_are_refused() {
    let err = verifier()
        .verify(
            &sign(report()),
            &data("synthetic/vcek-a.der"),
            1_700_000_000,
        )
        .expect_err("before the chain existed");
    assert!(matches!(err, Error::NotValidAt { .. }), "{err}");
}

#[test]
fn a_tee_the_requirement_does_not_accept_is_refused() {
    let claims = verify(&sign(report())).unwrap();
    let mut tdx_only = prod_snp();
    tdx_only.tee_types = vec![TeeType::Tdx];
    let r = refusal(&tdx_only, &claims, 0);
    assert_eq!(
        r.to_string(),
        "the evidence is sev-snp; AttestationRequirement prod-snp does not accept it (spec.teeTypes)"
    );
}

#[test]
fn openbao_jurisdictions_and_pinned_endpoints_are_enforced() {
    let mut claims = verify(&sign(report())).unwrap();
    let mut spec = prod_snp();
    spec.openbao = Some(OpenBaoEndpointRequirement {
        allowed_jurisdictions: vec![Jurisdiction("DE".into()), Jurisdiction("FR".into())],
        pinned_endpoints: vec![PinnedEndpoint {
            address: "https://bao.eu.example:8200".into(),
            spki_sha256: "ab".repeat(32),
            jurisdiction: Jurisdiction("DE".into()),
        }],
    });
    assert_eq!(refusal(&spec, &claims, 0).reason, Reason::NoEndpoint);
    let endpoint = |address: &str, spki: &str| OpenBaoClaims {
        address: address.into(),
        jurisdiction: None,
        spki_sha256: spki.into(),
    };
    claims.openbao = Some(endpoint("https://bao.eu.example:8200/", &"ab".repeat(32)));
    requirement::check("prod-snp", &spec, &claims, 0).expect("the pinned DE endpoint");
    claims.openbao = Some(endpoint("https://bao.us.example:8200", &"ab".repeat(32)));
    assert!(matches!(
        refusal(&spec, &claims, 0).reason,
        Reason::EndpointNotPinned { .. }
    ));
    claims.openbao = Some(endpoint("https://bao.eu.example:8200", &"cd".repeat(32)));
    assert!(matches!(
        refusal(&spec, &claims, 0).reason,
        Reason::SpkiMismatch { .. }
    ));

    // Jurisdictions alone: the endpoint's declared jurisdiction must be allowed.
    spec.openbao.as_mut().unwrap().pinned_endpoints.clear();
    claims.openbao = Some(OpenBaoClaims {
        jurisdiction: Some("US".into()),
        ..endpoint("https://bao.us.example:8200", "")
    });
    assert_eq!(
        refusal(&spec, &claims, 0).to_string(),
        "OpenBao endpoint https://bao.us.example:8200 is in jurisdiction US; AttestationRequirement prod-snp allows only the jurisdictions in spec.openbao.allowedJurisdictions"
    );
    claims.openbao.as_mut().unwrap().jurisdiction = None;
    assert!(matches!(
        refusal(&spec, &claims, 0).reason,
        Reason::UnknownJurisdiction { .. }
    ));
}

#[test]
fn hostile_reports_and_certificates_are_refused_without_panicking() {
    let good = sign(report());
    let vcek = data("synthetic/vcek-a.der");
    let v = verifier();
    for (what, report, cert) in [
        ("truncated report", good[..1000].to_vec(), vcek.clone()),
        ("empty report", Vec::new(), vcek.clone()),
        (
            "oversized report",
            [good.clone(), vec![0; 16]].concat(),
            vcek.clone(),
        ),
        (
            "garbage certificate",
            good.clone(),
            b"\x30\x82garbage".to_vec(),
        ),
        ("empty certificate", good.clone(), Vec::new()),
        (
            "certificate with trailing bytes",
            good.clone(),
            [vcek.clone(), vec![0]].concat(),
        ),
        (
            "TDX quote as a report",
            data("tdx/dcap-qvl/tdx_quote")[..1184].to_vec(),
            vcek.clone(),
        ),
    ] {
        let err = v.verify(&report, &cert, NOW).expect_err(what);
        eprintln!("{what}: {err}");
    }
    // Bit flips all over the report: each one is refused, none panics.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..400 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut mutated = good.clone();
        let index = (state as usize) % mutated.len();
        mutated[index] ^= 1 << ((state >> 60) % 8);
        assert!(
            v.verify(&mutated, &vcek, NOW).is_err(),
            "flip at {index} accepted"
        );
    }
}
