use rcgen::{CertificateParams, KeyPair, PublicKeyData};
use sha2::{Digest, Sha256};

use super::*;

fn certificate() -> (String, String, [u8; 32]) {
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["openbao.example".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let expected: [u8; 32] = Sha256::digest(key.subject_public_key_info()).into();
    (cert.pem(), key.serialize_pem(), expected)
}

#[test]
fn the_pin_is_the_sha256_of_the_public_key_info() {
    let (pem, _, expected) = certificate();
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).expect("PEM");
    assert_eq!(spki_sha256(&der), Some(expected));
    // Truncations and garbage never panic, they just have no key.
    for cut in [0, 1, 10, der.len() / 2, der.len() - 1] {
        assert_eq!(spki_sha256(&der[..cut]), None, "cut at {cut}");
    }
    assert_eq!(spki_sha256(b"\x30\x84\xff\xff\xff\xff"), None);
}

#[test]
fn pins_parse_in_the_usual_forms() {
    let digest = [7u8; 32];
    let printed = format_pin(&digest);
    assert!(printed.starts_with("sha256//"));
    assert_eq!(parse_pin(&printed).expect("curl form"), digest);
    assert_eq!(
        parse_pin(printed.trim_start_matches("sha256//")).expect("base64"),
        digest
    );
    assert_eq!(parse_pin(&"07".repeat(32)).expect("hex"), digest);
    let err = parse_pin("sha256//too-short").expect_err("short");
    assert!(err.to_string().contains("not a sha256 digest"), "{err}");
}

#[test]
fn settings_that_cannot_work_are_refused_by_name() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key, pin) = certificate();
    let cert_path = dir.path().join("client.crt");
    let key_path = dir.path().join("client.key");
    std::fs::write(&cert_path, cert).expect("cert");
    std::fs::write(&key_path, key).expect("key");

    let half = TlsSettings {
        spki_pins: vec![pin],
        client_cert: Some(cert_path.clone()),
        ..TlsSettings::default()
    };
    let err = client_config(&half).expect_err("cert without key");
    assert!(
        err.to_string().contains("PHANTOM_OPENBAO_CLIENT_KEY"),
        "{err}"
    );

    let missing_ca = TlsSettings {
        ca_file: Some(dir.path().join("nope.pem")),
        ..TlsSettings::default()
    };
    let err = client_config(&missing_ca).expect_err("no CA file");
    assert!(err.to_string().contains("nope.pem"), "{err}");

    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not PEM").expect("write");
    let err = client_config(&TlsSettings {
        ca_file: Some(empty),
        ..TlsSettings::default()
    })
    .expect_err("no certificate in the bundle");
    assert!(
        err.to_string().contains("holds no PEM certificate"),
        "{err}"
    );

    let mtls = TlsSettings {
        spki_pins: vec![pin],
        client_cert: Some(cert_path),
        client_key: Some(key_path),
        ..TlsSettings::default()
    };
    let config = client_config(&mtls).expect("pin and client certificate");
    assert!(config.client_auth_cert_resolver.has_certs());
}
