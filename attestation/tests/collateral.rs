//! The offline collateral bundle: each file gets a status, and a lookup returns exactly the
//! certificate or document the evidence needs, or says what to add.

use phantom_attestation::collateral::{Collateral, EntryStatus};
use phantom_attestation::emulator::SnpReportBuilder;
use phantom_attestation::{Error, Tee};

mod common;

use common::{NOW, chip, data, synthetic_verifier as synthetic};

/// 2025-07-01T00:00:00Z, inside the TDX fixtures' collateral window.
const TDX_NOW: i64 = 1_751_328_000;

fn pem(der: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
    .into_bytes()
}

fn bundle(now: i64) -> Collateral {
    Collateral::load(
        [
            ("vcek-a.der".to_owned(), data("synthetic/vcek-a.der")),
            ("vcek-b.pem".to_owned(), pem(&data("synthetic/vcek-b.der"))),
            ("garbage.der".to_owned(), b"\x30\x03\x02\x01".to_vec()),
            ("README".to_owned(), b"notes".to_vec()),
            (
                "real-milan-vcek.der".to_owned(),
                data("snp/virtee/vcek_milan.der"),
            ),
            (
                "tdx.json".to_owned(),
                data("tdx/dcap-qvl/tdx_quote_collateral.json"),
            ),
            ("broken.json".to_owned(), b"{\"tcb_info\": 3}".to_vec()),
        ],
        &synthetic(),
        now,
    )
}

fn status_of(collateral: &Collateral, file: &str) -> (EntryStatus, String) {
    let entry = collateral
        .entries()
        .iter()
        .find(|e| e.file == file)
        .unwrap_or_else(|| panic!("no entry {file}"));
    (entry.status, entry.detail.clone())
}

#[test]
fn every_file_gets_a_status_that_says_why() {
    let collateral = bundle(NOW);
    let names: Vec<&str> = collateral
        .entries()
        .iter()
        .map(|e| e.file.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "README",
            "broken.json",
            "garbage.der",
            "real-milan-vcek.der",
            "tdx.json",
            "vcek-a.der",
            "vcek-b.pem"
        ]
    );
    let (status, detail) = status_of(&collateral, "vcek-a.der");
    assert_eq!(status, EntryStatus::Ready, "{detail}");
    assert!(detail.starts_with("milan VCEK of chip "), "{detail}");
    assert!(detail.contains(&hex::encode(chip("a"))), "{detail}");
    assert_eq!(status_of(&collateral, "vcek-b.pem").0, EntryStatus::Ready);
    let (status, detail) = status_of(&collateral, "README");
    assert_eq!(status, EntryStatus::Invalid);
    assert!(detail.contains("*.json"), "{detail}");
    assert_eq!(
        status_of(&collateral, "garbage.der").0,
        EntryStatus::Invalid
    );
    // A genuine AMD VCEK is no use to a bundle that pins only the test root.
    let (status, detail) = status_of(&collateral, "real-milan-vcek.der");
    assert_eq!(status, EntryStatus::Invalid);
    assert!(detail.contains("no pinned AMD root"), "{detail}");
    // 2027 is past the fixture collateral's nextUpdate.
    let (status, detail) = status_of(&collateral, "tdx.json");
    assert_eq!(status, EntryStatus::Expired);
    assert!(detail.contains("B0C06F000000"), "{detail}");
    assert_eq!(
        status_of(&collateral, "broken.json").0,
        EntryStatus::Invalid
    );
    assert_eq!(collateral.ready(Tee::SevSnp), 2);
    assert_eq!(collateral.ready(Tee::Tdx), 0);
}

#[test]
fn a_report_finds_its_chips_vcek_and_verifies_with_it() {
    let collateral = bundle(NOW);
    let report = SnpReportBuilder::milan(chip("a")).sign(&data("synthetic/vcek-a.pk8"));
    let found = collateral.snp_endorsements(&report).expect("vcek-a");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].der(), data("synthetic/vcek-a.der"));
    let verifier = synthetic();
    let endorsed = verifier
        .verify_endorsed(&report, found[0], NOW)
        .expect("the report verifies with the VCEK the bundle picked");
    assert_eq!(
        endorsed,
        verifier
            .verify(&report, &data("synthetic/vcek-a.der"), NOW)
            .expect("and with its DER")
    );
    // Checked once at load, the validity windows still hold at each verification.
    let err = verifier
        .verify_endorsed(&report, found[0], 4_102_444_800)
        .unwrap_err();
    assert!(matches!(err, Error::NotValidAt { .. }), "{err}");
}

#[test]
fn a_chip_or_tcb_the_bundle_lacks_is_named_in_the_refusal() {
    let collateral = bundle(NOW);
    let unknown = SnpReportBuilder::milan(chip("c")).sign(&data("synthetic/vcek-a.pk8"));
    let err = collateral.snp_endorsements(&unknown).unwrap_err();
    assert!(matches!(err, Error::NoEndorsement { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&hex::encode(chip("c"))), "{text}");
    assert!(text.contains("kdsintf.amd.com"), "{text}");

    let newer_tcb = SnpReportBuilder::milan(chip("a"))
        .reported_tcb(9, 0, 23, 220)
        .sign(&data("synthetic/vcek-a.pk8"));
    let text = collateral
        .snp_endorsements(&newer_tcb)
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("bootloader=9 tee=0 snp=23 microcode=220"),
        "{text}"
    );
}

#[test]
fn a_masked_chip_id_is_matched_by_tcb_alone() {
    let collateral = bundle(NOW);
    let masked = SnpReportBuilder::milan([0; 64]).sign(&data("synthetic/vcek-b.pk8"));
    let found = collateral.snp_endorsements(&masked).expect("candidates");
    assert_eq!(found.len(), 2, "both test VCEKs share the TCB");
    assert!(
        found
            .iter()
            .any(|e| synthetic().verify_endorsed(&masked, e, NOW).is_ok()),
        "one of them signed it"
    );
}

#[test]
fn hostile_reports_are_refused_before_any_lookup() {
    let collateral = bundle(NOW);
    for report in [
        Vec::new(),
        vec![0u8; 100],
        vec![0xff; 1184],
        vec![0u8; 4096],
    ] {
        assert!(collateral.snp_endorsements(&report).is_err());
    }
}

#[test]
fn a_quote_finds_the_collateral_of_its_platform() {
    let collateral = bundle(TDX_NOW);
    assert_eq!(status_of(&collateral, "tdx.json").0, EntryStatus::Ready);
    let found = collateral
        .tdx_collateral(&data("tdx/dcap-qvl/tdx_quote"))
        .expect("collateral for the quote's FMSPC");
    assert_eq!(found, data("tdx/dcap-qvl/tdx_quote_collateral.json"));

    let err = collateral
        .tdx_collateral(&data("tdx/dcap-qvl/tdx_quote_outdated"))
        .unwrap_err();
    assert!(
        matches!(&err, Error::NoTdxCollateral { fmspc } if fmspc == "90C06F000000"),
        "{err}"
    );
    assert!(collateral.tdx_collateral(b"not a quote").is_err());
    assert!(collateral.tdx_collateral(&vec![0; 64 * 1024]).is_err());
}
