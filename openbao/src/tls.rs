//! TLS to OpenBao: the server is trusted through a CA bundle, a pinned public key (SPKI sha256),
//! or both; a client certificate is presented when OpenBao asks for one (mTLS).
//!
//! The pin covers the key, not the certificate, so a re-issued certificate for the same key keeps
//! working, and a certificate for another key is refused even when a trusted CA signed it: a
//! compromised or compelled CA cannot redirect the sidecar (see docs/threat-model.md).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Where the system CA bundle usually is (Debian, Alpine, distroless); a scratch image has none.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// How the sidecar trusts OpenBao and proves itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM CA bundle that signs OpenBao's certificate.
    pub ca_file: Option<PathBuf>,
    /// The same, inline (admission hands it over in the environment).
    pub ca_pem: Option<String>,
    /// sha256 digests of accepted SubjectPublicKeyInfo (any one matches): rotation to a new key
    /// is pinning both for a while.
    pub spki_pins: Vec<[u8; 32]>,
    /// PEM client certificate chain and key, for OpenBao listeners that require one.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// The flags that fill [`TlsSettings`] (feature `cli`), shared by every binary that talks to
/// OpenBao (`phantom-proxy`, `phantom-preflight`), so they spell them the same way.
#[cfg(feature = "cli")]
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// PEM CA bundle that signs OpenBao's certificate (default: the system bundle, unless a pin is set).
    #[arg(long, env = "PHANTOM_OPENBAO_CA_FILE")]
    pub openbao_ca_file: Option<PathBuf>,
    /// The CA bundle inline, as PEM (admission hands it over this way).
    #[arg(
        long,
        env = "PHANTOM_OPENBAO_CA_PEM",
        conflicts_with = "openbao_ca_file"
    )]
    pub openbao_ca_pem: Option<String>,
    /// Pinned sha256 of OpenBao's public key (SubjectPublicKeyInfo), `sha256//BASE64` or hex;
    /// comma-separated to accept several during a key rotation. With a CA bundle both must hold.
    #[arg(long, env = "PHANTOM_OPENBAO_SPKI_SHA256", value_delimiter = ',')]
    pub openbao_spki_sha256: Vec<String>,
    /// PEM client certificate for OpenBao listeners that require mTLS.
    #[arg(
        long,
        env = "PHANTOM_OPENBAO_CLIENT_CERT",
        requires = "openbao_client_key"
    )]
    pub openbao_client_cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[arg(
        long,
        env = "PHANTOM_OPENBAO_CLIENT_KEY",
        requires = "openbao_client_cert"
    )]
    pub openbao_client_key: Option<PathBuf>,
}

#[cfg(feature = "cli")]
impl TlsArgs {
    /// The settings, with every pin parsed (an unparsable pin is an error naming it).
    pub fn settings(&self) -> Result<TlsSettings> {
        Ok(TlsSettings {
            ca_file: self.openbao_ca_file.clone(),
            ca_pem: self.openbao_ca_pem.clone(),
            spki_pins: self
                .openbao_spki_sha256
                .iter()
                .filter(|p| !p.trim().is_empty())
                .map(|p| parse_pin(p))
                .collect::<Result<_>>()?,
            client_cert: self.openbao_client_cert.clone(),
            client_key: self.openbao_client_key.clone(),
        })
    }
}

/// Parses a pin: `sha256//BASE64` (curl's `--pinnedpubkey` form), bare base64 or 64 hex digits.
pub fn parse_pin(text: &str) -> Result<[u8; 32]> {
    let text = text.trim();
    let body = text.strip_prefix("sha256//").unwrap_or(text);
    let bytes = if body.len() == 64 && body.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&body[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .ok()
    } else {
        base64::engine::general_purpose::STANDARD.decode(body).ok()
    };
    bytes
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| tls_error(format!(
                "the pin {text:?} is not a sha256 digest (expected sha256//BASE64, base64 or 64 hex digits, as printed by `openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64`)"
            )))
}

/// `sha256//BASE64` of a digest, the form errors and docs print.
pub fn format_pin(pin: &[u8; 32]) -> String {
    format!(
        "sha256//{}",
        base64::engine::general_purpose::STANDARD.encode(pin)
    )
}

/// The sha256 of a DER certificate's SubjectPublicKeyInfo (`None` when it does not parse).
///
/// Parsed by rustls-webpki, the X.509 parser rustls verifies the chain with: it is in every TLS
/// binary already, where x509-parser's tables would add 0.3 MB to the sidecar and about 0.1 MiB
/// of resident memory (its relocated statics are touched at start, used or not).
pub fn spki_sha256(cert_der: &[u8]) -> Option<[u8; 32]> {
    let der = CertificateDer::from(cert_der);
    let cert = webpki::EndEntityCert::try_from(&der).ok()?;
    Some(Sha256::digest(cert.subject_public_key_info()).into())
}

/// Chain validation (when a CA is configured) followed by the pin check (when pins are).
#[derive(Debug)]
struct PinningVerifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    pins: Vec<[u8; 32]>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(chain) = &self.chain {
            chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        }
        if self.pins.is_empty() {
            return Ok(ServerCertVerified::assertion());
        }
        let presented = spki_sha256(end_entity).ok_or_else(|| {
            rustls::Error::General("OpenBao's certificate has no readable public key".into())
        })?;
        if self.pins.contains(&presented) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "pinned public key mismatch: OpenBao presented {}, the pins are {}",
                format_pin(&presented),
                self.pins
                    .iter()
                    .map(format_pin)
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A settings error (no connection yet, so no address: the client fills it in).
fn tls_error(cause: String) -> Error {
    Error::Tls {
        addr: "-".into(),
        cause,
        source: None,
    }
}

/// The PEM certificates in `pem`; `source` names where it came from in errors.
fn parse_certs(pem: &[u8], source: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(format!("reading {source}: {e}")))?;
    if certs.is_empty() {
        return Err(tls_error(format!("{source} holds no PEM certificate")));
    }
    Ok(certs)
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path)
        .map_err(|e| tls_error(format!("reading the {what} {}: {e}", path.display())))?;
    parse_certs(&pem, &format!("the {what} {}", path.display()))
}

fn roots(settings: &TlsSettings) -> Result<Option<RootCertStore>> {
    let (certs, source) = match (&settings.ca_pem, &settings.ca_file) {
        (Some(pem), _) => (
            parse_certs(pem.as_bytes(), "PHANTOM_OPENBAO_CA_PEM")?,
            "PHANTOM_OPENBAO_CA_PEM".to_owned(),
        ),
        (None, Some(path)) => (
            read_certs(path, "CA bundle")?,
            format!("the CA bundle {}", path.display()),
        ),
        // A pin alone is a complete trust decision; without one, fall back to the system bundle.
        (None, None) if !settings.spki_pins.is_empty() => return Ok(None),
        (None, None) => {
            let bundle = std::env::var_os("SSL_CERT_FILE")
                .map(PathBuf::from)
                .or_else(|| {
                    SYSTEM_BUNDLES
                        .iter()
                        .map(PathBuf::from)
                        .find(|p| p.exists())
                })
                .ok_or_else(|| {
                    tls_error(
                        "no way to trust OpenBao's certificate: set PHANTOM_OPENBAO_CA_FILE or PHANTOM_OPENBAO_SPKI_SHA256 (the image has no system CA bundle)".into(),
                    )
                })?;
            (
                read_certs(&bundle, "CA bundle")?,
                format!("the CA bundle {}", bundle.display()),
            )
        }
    };
    let mut store = RootCertStore::empty();
    for cert in certs {
        store
            .add(cert)
            .map_err(|e| tls_error(format!("a certificate in {source} is not usable: {e}")))?;
    }
    Ok(Some(store))
}

/// The rustls client configuration for `settings`.
pub fn client_config(settings: &TlsSettings) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = match roots(settings)? {
        Some(store) => Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                .build()
                .map_err(|e| tls_error(format!("building the certificate verifier: {e}")))?,
        ),
        None => None,
    };
    let verifier = PinningVerifier {
        chain,
        pins: settings.spki_pins.clone(),
        algorithms: provider.signature_verification_algorithms,
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(format!("TLS versions: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match (&settings.client_cert, &settings.client_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert, "client certificate")?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| tls_error(format!("reading the client key {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls_error(format!("the client certificate and key do not fit: {e}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(tls_error(
                "a client certificate needs both PHANTOM_OPENBAO_CLIENT_CERT and PHANTOM_OPENBAO_CLIENT_KEY".into(),
            ));
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests;
