use super::*;
use crate::emulator::{SnpReportBuilder, attestation_agent_answer};
use crate::snp::cert_table::{self, Entry};
use crate::tsm::Provider;

fn data(path: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn emulated() -> Vec<u8> {
    SnpReportBuilder::milan([7; 64])
        .report_data([9; 64])
        .sign(&data("synthetic/vcek-a.pk8"))
}

#[test]
fn the_url_carries_the_text_form_unescaped() {
    assert_eq!(
        evidence_url("http://127.0.0.1:8006/", "abc-_"),
        "http://127.0.0.1:8006/aa/evidence?runtime_data=abc-_"
    );
}

#[test]
fn a_real_report_survives_the_agents_serde_form_byte_for_byte() {
    // Trustee's Milan report and virtee's: the signature covers the raw bytes, so the re-encoded
    // report must be the one the firmware wrote.
    let virtee = hex::decode(
        String::from_utf8(data("snp/virtee/report_milan.hex"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    for report in [data("snp/trustee/test-report.bin"), virtee, emulated()] {
        let answer = attestation_agent_answer(&report, &[]);
        let evidence = parse(&answer).unwrap();
        assert_eq!(evidence.provider, Provider::SevGuest);
        assert_eq!(evidence.outblob, report);
        assert_eq!(evidence.auxblob, None);
    }
}

#[test]
fn the_cert_chain_becomes_the_certificate_table_the_verifier_reads() {
    let vcek = data("synthetic/vcek-a.der");
    let answer = attestation_agent_answer(&emulated(), &[(Entry::Vcek, &vcek)]);
    let evidence = parse(&answer).unwrap();
    let table = cert_table::parse(evidence.auxblob.as_deref().unwrap()).unwrap();
    assert_eq!(table, vec![(Entry::Vcek, vcek)]);
}

#[test]
fn a_list_of_tee_pairs_yields_its_one_snp_entry_object_or_string() {
    let report = emulated();
    let single = attestation_agent_answer(&report, &[]);
    let object: serde_json::Value = serde_json::from_str(&single).unwrap();
    for answer in [
        serde_json::json!([["sample", {"svn": "1"}], ["snp", object]]),
        serde_json::json!([["snp", single]]),
    ] {
        let evidence = parse(&answer.to_string()).unwrap();
        assert_eq!(evidence.outblob, report);
    }
}

#[test]
fn a_tdx_answer_yields_its_quote() {
    use base64::Engine as _;
    let quote = data("tdx/dcap-qvl/tdx_quote");
    let answer = serde_json::json!({
        "cc_eventlog": null,
        "quote": base64::engine::general_purpose::STANDARD.encode(&quote),
    });
    let evidence = parse(&answer.to_string()).unwrap();
    assert_eq!(evidence.provider, Provider::TdxGuest);
    assert_eq!(evidence.outblob, quote);
}

#[test]
fn hostile_answers_are_refused_with_what_is_wrong() {
    let object: serde_json::Value =
        serde_json::from_str(&attestation_agent_answer(&emulated(), &[])).unwrap();
    let cases = [
        ("{".to_owned(), "not JSON"),
        ("42".to_owned(), "a JSON number"),
        (r#"{"svn": "1"}"#.to_owned(), "neither an SEV-SNP"),
        (
            r#"{"attestation_report": {"version": 3}}"#.to_owned(),
            "the SEV-SNP evidence",
        ),
        (r#"{"quote": "%%%"}"#.to_owned(), "not base64"),
        (r#"[["sample", {}]]"#.to_owned(), "no SEV-SNP (snp) or TDX"),
        (
            serde_json::json!([["snp", object], ["snp", object]]).to_string(),
            "2 SEV-SNP/TDX entries",
        ),
        (r#"[["snp"]]"#.to_owned(), "1 elements"),
        (r#"[["tdx", "{"]]"#.to_owned(), "not JSON"),
        (
            serde_json::json!([["tdx", object]]).to_string(),
            "evidence of another TEE",
        ),
        (" ".repeat(MAX_ANSWER_LEN + 1), "more than the"),
    ];
    for (answer, says) in cases {
        let error = parse(&answer).unwrap_err().to_string();
        assert!(
            error.starts_with("attestation-agent evidence is malformed") && error.contains(says),
            "{says:?}: {error}"
        );
    }
}

#[test]
fn an_answer_with_amds_full_chain_fits_the_limit_and_the_brokers_default_body() {
    // AMD's real ARK, ASK and ASVK (RSA-4096) and a real VCEK: the largest chain an agent sends.
    use base64::Engine as _;
    let bundle = String::from_utf8(data("snp/trustee/milan_ask_ark_asvk.pem")).unwrap();
    let certs: Vec<Vec<u8>> = bundle
        .split("-----END CERTIFICATE-----")
        .filter(|block| block.contains("BEGIN"))
        .map(|block| {
            let b64: String = block
                .lines()
                .filter(|l| !l.starts_with("-----") && !l.trim().is_empty())
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap()
        })
        .collect();
    assert_eq!(certs.len(), 3);
    let vcek = data("snp/trustee/test-vcek.der");
    let answer = attestation_agent_answer(
        &data("snp/trustee/test-report.bin"),
        &[
            (Entry::Ark, &certs[0]),
            (Entry::Ask, &certs[1]),
            (Entry::Ask, &certs[2]),
            (Entry::Vcek, &vcek),
        ],
    );
    assert!(answer.len() <= MAX_ANSWER_LEN, "{} bytes", answer.len());
    let request =
        serde_json::to_string(&crate::protocol::EvidenceRequest::AttestationAgent { answer })
            .unwrap();
    assert!(request.len() + 512 < 64 * 1024, "{} bytes", request.len());
    let sent: serde_json::Value = serde_json::from_str(&request).unwrap();
    parse(sent["answer"].as_str().unwrap()).unwrap();
}
