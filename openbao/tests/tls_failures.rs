//! TLS failures are recognised by their type (a `rustls::Error` on the source chain), not by
//! message text: a local TLS listener with a certificate the client does not trust, or whose key
//! is not pinned, gives `Error::Tls`; a closed port gives `Error::Unreachable`.

use std::sync::Arc;

use phantom_openbao::tls::TlsSettings;
use phantom_openbao::{Error, OpenBaoClient};
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Serves TLS with a fresh self-signed certificate for `localhost`; returns its address and PEM.
async fn tls_listener() -> (std::net::SocketAddr, String) {
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(cert.der().to_vec())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    (addr, cert.pem())
}

fn has_rustls_source(error: &Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(link) = next {
        if link.is::<rustls::Error>() {
            return true;
        }
        next = match link
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(wrapped) => Some(wrapped),
            None => link.source(),
        };
    }
    false
}

#[tokio::test]
async fn an_unpinned_key_is_a_tls_failure_with_its_rustls_source() {
    let (addr, _) = tls_listener().await;
    let client = OpenBaoClient::with_tls(
        format!("https://localhost:{}", addr.port()),
        &TlsSettings {
            spki_pins: vec![[9; 32]],
            ..TlsSettings::default()
        },
    )
    .expect("client");
    let err = client.health(None).await.expect_err("pin refuses");
    match &err {
        Error::Tls { cause, .. } => {
            assert!(cause.contains("pinned public key mismatch"), "{cause}")
        }
        other => panic!("not a TLS failure: {other:?}"),
    }
    assert!(has_rustls_source(&err), "{err:?}");
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_tls_failure() {
    let (addr, _) = tls_listener().await;
    let (_, stranger_pem) = tls_listener().await;
    let client = OpenBaoClient::with_tls(
        format!("https://localhost:{}", addr.port()),
        &TlsSettings {
            ca_pem: Some(stranger_pem),
            ..TlsSettings::default()
        },
    )
    .expect("client");
    let err = client.health(None).await.expect_err("untrusted");
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    assert!(has_rustls_source(&err), "{err:?}");
}

#[tokio::test]
async fn the_trusted_certificate_gets_past_tls() {
    let (addr, pem) = tls_listener().await;
    let client = OpenBaoClient::with_tls(
        format!("https://localhost:{}", addr.port()),
        &TlsSettings {
            ca_pem: Some(pem),
            ..TlsSettings::default()
        },
    )
    .expect("client");
    // The listener speaks no HTTP: whatever fails now, it is not TLS.
    let err = client.health(None).await.expect_err("no HTTP");
    assert!(!matches!(err, Error::Tls { .. }), "{err:?}");
}

#[tokio::test]
async fn a_closed_port_is_unreachable_not_tls() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let client = OpenBaoClient::new(format!("http://127.0.0.1:{port}")).expect("client");
    let err = client.health(None).await.expect_err("closed");
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "keeps its source"
    );
}
