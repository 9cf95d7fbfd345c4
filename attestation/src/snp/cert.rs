//! The X.509 checks AMD's chain needs, done by hand: its certificates are RSA-PSS (ARK, ASK,
//! ASVK) and ECDSA P-384 (VCEK, VLEK) with AMD's own extensions, and a generic path builder
//! would accept far more than this chain ever contains.

use ring::signature::{self, UnparsedPublicKey};
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::{
    OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION, OID_PKCS1_RSASSAPSS,
};
use x509_parser::prelude::FromDer;

use crate::{Error, Result};

/// A certificate kept as DER with what the checks read from it, parsed once.
#[derive(Debug, Clone)]
pub(crate) struct Cert {
    pub(crate) der: Vec<u8>,
    pub(crate) subject_cn: String,
    pub(crate) issuer_cn: String,
    subject: Vec<u8>,
    issuer: Vec<u8>,
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
    tbs: Vec<u8>,
    signature: Vec<u8>,
    signature_algorithm: String,
    key_algorithm: String,
    /// The SubjectPublicKeyInfo's key bits (an RSAPublicKey, or an uncompressed EC point).
    key: Vec<u8>,
    extensions: Vec<(String, Vec<u8>)>,
}

impl Cert {
    pub(crate) fn parse(what: &str, der: &[u8]) -> Result<Self> {
        let cert = parse(what, der)?;
        let key = cert.public_key();
        Ok(Self {
            der: der.to_vec(),
            subject_cn: common_name(cert.subject()),
            issuer_cn: common_name(cert.issuer()),
            subject: cert.subject().as_raw().to_vec(),
            issuer: cert.issuer().as_raw().to_vec(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            tbs: cert.tbs_certificate.as_ref().to_vec(),
            signature: cert.signature_value.data.to_vec(),
            signature_algorithm: cert.signature_algorithm.algorithm.to_id_string(),
            key_algorithm: key.algorithm.algorithm.to_id_string(),
            key: key.subject_public_key.data.to_vec(),
            extensions: cert
                .extensions()
                .iter()
                .map(|e| (e.oid.to_id_string(), e.value.to_vec()))
                .collect(),
        })
    }

    /// Whether `self` names `issuer` as its issuer (DER-equal names).
    pub(crate) fn issued_by(&self, issuer: &Cert) -> bool {
        self.issuer == issuer.subject
    }

    pub(crate) fn extension(&self, oid: &str) -> Option<&[u8]> {
        self.extensions
            .iter()
            .find(|(o, _)| o == oid)
            .map(|(_, v)| v.as_slice())
    }

    pub(crate) fn check_valid_at(&self, what: &str, now: i64) -> Result<()> {
        if now < self.not_before || now > self.not_after {
            return Err(Error::NotValidAt {
                what: format!("{what} certificate ({})", self.subject_cn),
                now,
                not_before: self.not_before,
                not_after: self.not_after,
            });
        }
        Ok(())
    }

    /// Checks that `issuer`'s RSA key made `self`'s RSASSA-PSS SHA-384 signature.
    pub(crate) fn check_signed_by(&self, what: &str, issuer: &Cert) -> Result<()> {
        if self.signature_algorithm != OID_PKCS1_RSASSAPSS.to_id_string() {
            return Err(Error::Algorithm {
                what: format!("{what} certificate's signature"),
                found: self.signature_algorithm.clone(),
                expected: "RSASSA-PSS with SHA-384",
            });
        }
        if issuer.key_algorithm != OID_PKCS1_RSAENCRYPTION.to_id_string() {
            return Err(Error::Algorithm {
                what: format!("{} key", issuer.subject_cn),
                found: issuer.key_algorithm.clone(),
                expected: "RSA",
            });
        }
        UnparsedPublicKey::new(&signature::RSA_PSS_2048_8192_SHA384, &issuer.key)
            .verify(&self.tbs, &self.signature)
            .map_err(|_| Error::BadSignature {
                what: format!(
                    "{what} certificate ({}) signed by {}",
                    self.subject_cn, issuer.subject_cn
                ),
            })
    }

    /// The uncompressed P-384 point of an ECDSA certificate's key.
    pub(crate) fn p384_point(&self, what: &str) -> Result<&[u8]> {
        if self.key_algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY.to_id_string() || self.key.len() != 97 {
            return Err(Error::Algorithm {
                what: format!("{what} key"),
                found: self.key_algorithm.clone(),
                expected: "ECDSA P-384",
            });
        }
        Ok(&self.key)
    }
}

fn parse<'a>(what: &str, der: &'a [u8]) -> Result<X509Certificate<'a>> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|source| Error::Certificate {
        what: what.to_owned(),
        source,
    })?;
    if !rest.is_empty() {
        return Err(Error::Malformed {
            what: "certificate",
            reason: format!("{what} certificate has {} bytes after its DER", rest.len()),
        });
    }
    Ok(cert)
}

fn common_name(name: &x509_parser::x509::X509Name<'_>) -> String {
    name.iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Certificates of a PEM bundle, in order.
pub(crate) fn pem_certificates(what: &str, pem: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| Error::Pem {
            what: what.to_owned(),
            reason: e.to_string(),
        })?;
        if block.label != "CERTIFICATE" {
            return Err(Error::Pem {
                what: what.to_owned(),
                reason: format!(
                    "block {} is a {}, not a CERTIFICATE",
                    out.len() + 1,
                    block.label
                ),
            });
        }
        out.push(block.contents);
    }
    if out.is_empty() {
        return Err(Error::Pem {
            what: what.to_owned(),
            reason: "no BEGIN CERTIFICATE block".into(),
        });
    }
    Ok(out)
}
