//! AMD SEV-SNP report verification, offline.
//!
//! The report is parsed by the `sev` crate; every signature is checked with ring, so the verifier
//! links neither OpenSSL nor a second RSA/ECDSA implementation (ring is already in every Phantom
//! binary through rustls). The checks, in order:
//!
//! 1. the report is 1,184 bytes, version ≥ 2, signature algorithm 1 (ECDSA P-384 / SHA-384);
//! 2. key_info names the signing key (VCEK or VLEK) and the certificate supplied is of that kind;
//! 3. the certificate was issued by an intermediate (ASK for VCEK, ASVK for VLEK) of a pinned ARK,
//!    and ARK, intermediate and certificate are valid at `now`;
//! 4. the certificate's TCB extensions equal the report's `reported_tcb`, and a VCEK's HW_ID equals
//!    the report's `chip_id` (unless the chip ID is masked, which the claims say);
//! 5. the report's CPU generation (version ≥ 3) is the product line of the chain;
//! 6. the report's signature verifies with the certificate's key.
//!
//! What the guest *is* (measurement, debug, VMPL, TCB minimums) is policy: [`crate::requirement`].

mod cert;
pub mod cert_table;
pub mod index;
mod roots;

pub use roots::Roots;

use sev::firmware::guest::AttestationReport;
use sev::parser::ByteParser;

use self::cert::Cert;
pub(crate) use self::cert::pem_certificates;
use crate::claims::{SnpClaims, SnpTcb};
use crate::{Error, Result};

/// Bytes of an SEV-SNP attestation report.
pub const REPORT_LEN: usize = 1184;
/// Bytes the report's signature covers.
const SIGNED_LEN: usize = 0x2a0;

const OID_BOOTLOADER: &str = "1.3.6.1.4.1.3704.1.3.1";
const OID_TEE: &str = "1.3.6.1.4.1.3704.1.3.2";
const OID_SNP: &str = "1.3.6.1.4.1.3704.1.3.3";
const OID_MICROCODE: &str = "1.3.6.1.4.1.3704.1.3.8";
const OID_FMC: &str = "1.3.6.1.4.1.3704.1.3.9";
const OID_HW_ID: &str = "1.3.6.1.4.1.3704.1.4";
const OID_CSP_ID: &str = "1.3.6.1.4.1.3704.1.5";

/// Which key signed a report (key_info bits 4:2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningKey {
    /// Versioned Chip Endorsement Key: per chip and TCB.
    Vcek,
    /// Versioned Loaded Endorsement Key: per cloud provider, loaded into the chip.
    Vlek,
}

impl SigningKey {
    fn name(self) -> &'static str {
        match self {
            Self::Vcek => "VCEK",
            Self::Vlek => "VLEK",
        }
    }

    fn subject(self) -> &'static str {
        match self {
            Self::Vcek => "SEV-VCEK",
            Self::Vlek => "SEV-VLEK",
        }
    }
}

/// A VCEK or VLEK whose signature by a pinned chain was checked; reports verified with it re-check
/// only the chain's validity windows.
#[derive(Debug, Clone)]
pub struct Endorsement {
    product: String,
    ark: Cert,
    intermediate: Cert,
    cert: Cert,
}

impl Endorsement {
    /// The product line of the chain (`milan`, `genoa`, `turin`).
    pub fn product(&self) -> &str {
        &self.product
    }

    /// The certificate, DER.
    pub fn der(&self) -> &[u8] {
        &self.cert.der
    }

    fn check_valid_at(&self, now: i64) -> Result<()> {
        self.ark
            .check_valid_at(&format!("{} ARK", self.product), now)?;
        self.intermediate
            .check_valid_at(&format!("{} intermediate", self.product), now)?;
        self.cert.check_valid_at(kind_name(&self.cert), now)
    }
}

/// How errors name an endorsement certificate.
fn kind_name(cert: &Cert) -> &'static str {
    match cert.subject_cn.as_str() {
        "SEV-VCEK" => "VCEK",
        "SEV-VLEK" => "VLEK",
        _ => "VCEK/VLEK",
    }
}

/// The certificate supplied must be of the kind key_info names.
fn check_kind(key: SigningKey, cert: &Cert) -> Result<()> {
    if cert.subject_cn == key.subject() {
        return Ok(());
    }
    Err(Error::EndorsementKind {
        expected: key.name(),
        supplied: if cert.subject_cn.is_empty() {
            "certificate without a common name".into()
        } else {
            cert.subject_cn.clone()
        },
    })
}

/// A report that passed the format checks (1 and 2 above).
struct Parsed {
    report: AttestationReport,
    version: u32,
    key: SigningKey,
}

fn parse(report: &[u8]) -> Result<Parsed> {
    if report.len() != REPORT_LEN {
        return Err(Error::Malformed {
            what: "SEV-SNP report",
            reason: format!("{} bytes, a report has {REPORT_LEN}", report.len()),
        });
    }
    let version = u32::from_le_bytes(report[0..4].try_into().expect("4 bytes"));
    if version < 2 {
        return Err(Error::ReportVersion { version });
    }
    let parsed =
        AttestationReport::from_bytes(report).map_err(|source| Error::SnpParse { source })?;
    if parsed.sig_algo != 1 {
        return Err(Error::SignatureAlgorithm {
            algorithm: parsed.sig_algo,
        });
    }
    let key = match parsed.key_info.signing_key() {
        0 => SigningKey::Vcek,
        1 => SigningKey::Vlek,
        other => return Err(Error::Unsigned(other)),
    };

    Ok(Parsed {
        report: parsed,
        version,
        key,
    })
}

/// Verifies SEV-SNP reports against a set of trusted AMD chains.
#[derive(Debug, Clone)]
pub struct SnpVerifier {
    roots: Roots,
}

impl SnpVerifier {
    pub fn new(roots: Roots) -> Self {
        Self { roots }
    }

    /// Verifies `report` (raw, 1,184 bytes) with the DER certificate of the key that signed it
    /// (`endorsement`: the chip's VCEK or the provider's VLEK, from the collateral bundle), at
    /// `now` (unix seconds). Returns what the report states, for policy to judge.
    pub fn verify(&self, report: &[u8], endorsement: &[u8], now: i64) -> Result<SnpClaims> {
        let parsed = parse(report)?;
        let cert = Cert::parse(parsed.key.name(), endorsement)?;
        check_kind(parsed.key, &cert)?;
        let endorsement = self.endorse(cert, now)?;
        self.verify_parsed(report, parsed, &endorsement)
    }

    /// [`verify`](Self::verify) with an endorsement whose chain was checked once, when the
    /// collateral was loaded ([`endorsement`](Self::endorsement)): the validity windows are
    /// checked again at `now`, the chain's RSA signatures are not.
    pub fn verify_endorsed(
        &self,
        report: &[u8],
        endorsement: &Endorsement,
        now: i64,
    ) -> Result<SnpClaims> {
        let parsed = parse(report)?;
        check_kind(parsed.key, &endorsement.cert)?;
        endorsement.check_valid_at(now)?;
        self.verify_parsed(report, parsed, endorsement)
    }

    fn verify_parsed(
        &self,
        report: &[u8],
        Parsed {
            report: parsed,
            version,
            key,
        }: Parsed,
        endorsement: &Endorsement,
    ) -> Result<SnpClaims> {
        let what = key.name();
        let endorsement_cert = &endorsement.cert;
        let product = &endorsement.product;

        let tcb = &parsed.reported_tcb;
        let endorsed = index::endorsed_of(endorsement_cert)?;
        let certified = endorsed.key.tcb;
        for (component, certificate, report_svn) in [
            ("bootloader", certified.bootloader, tcb.bootloader),
            ("tee", certified.tee, tcb.tee),
            ("snp", certified.snp, tcb.snp),
            ("microcode", certified.microcode, tcb.microcode),
        ] {
            if certificate != report_svn {
                return Err(Error::TcbMismatch {
                    component,
                    certificate,
                    report: report_svn,
                });
            }
        }
        match (tcb.fmc, certified.fmc) {
            (Some(_), None) => {
                return Err(Error::MissingExtension {
                    oid: OID_FMC,
                    name: "fmc",
                });
            }
            (Some(report_svn), Some(certificate)) if report_svn != certificate => {
                return Err(Error::TcbMismatch {
                    component: "fmc",
                    certificate,
                    report: report_svn,
                });
            }
            _ => {}
        }
        let chip_id_masked = parsed.chip_id.iter().all(|b| *b == 0);
        if key == SigningKey::Vcek && !chip_id_masked {
            match &endorsed.chip_id {
                None => {
                    return Err(Error::MissingExtension {
                        oid: OID_HW_ID,
                        name: "hwID",
                    });
                }
                Some(hw_id) if hw_id.as_slice() != parsed.chip_id.as_slice() => {
                    return Err(Error::ChipMismatch);
                }
                Some(_) => {}
            }
        }
        if let (Some(family), Some(model)) = (parsed.cpuid_fam_id, parsed.cpuid_mod_id) {
            let generation = sev::Generation::identify_cpu(family, model)
                .map_err(|source| Error::SnpParse { source })?;
            let report_product = match generation {
                sev::Generation::Milan => "milan",
                sev::Generation::Genoa => "genoa",
                sev::Generation::Turin => "turin",
                sev::Generation::Venice => "venice",
            }
            .to_owned();
            if report_product != *product {
                return Err(Error::ProductMismatch {
                    report: report_product,
                    chain: product.clone(),
                });
            }
        }

        // The signature field is two 72-byte scalars of which 48 bytes are used, then reserved
        // bytes; none of it is signed, so anything but zeros there makes two different byte
        // strings of one report (and a replay check keyed on the bytes could be fooled).
        let unsigned_nonzero = [
            &report[SIGNED_LEN + 48..SIGNED_LEN + 72],
            &report[SIGNED_LEN + 72 + 48..SIGNED_LEN + 144],
            &report[SIGNED_LEN + 144..],
        ]
        .iter()
        .any(|part| part.iter().any(|b| *b != 0));
        if unsigned_nonzero {
            return Err(Error::Malformed {
                what: "SEV-SNP report",
                reason: "the unsigned bytes around its signature are not zero".into(),
            });
        }
        let point = endorsement_cert.p384_point(what)?;
        let mut signature = Vec::with_capacity(96);
        for component in [parsed.signature.r(), parsed.signature.s()] {
            // 72-byte little-endian fields of which the first 48 bytes are the P-384 scalar.
            signature.extend(component[..48].iter().rev());
        }
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P384_SHA384_FIXED, &point)
            .verify(&report[..SIGNED_LEN], &signature)
            .map_err(|_| Error::BadSignature {
                what: format!("SEV-SNP report signed by its {what}"),
            })?;

        let csp = endorsement_cert.extension(OID_CSP_ID).and_then(der_string);
        Ok(SnpClaims {
            product: product.clone(),
            version,
            signing_key: what.to_ascii_lowercase(),
            measurement: hex::encode(parsed.measurement),
            host_data: hex::encode(parsed.host_data),
            report_data: hex::encode(parsed.report_data),
            family_id: hex::encode(parsed.family_id),
            image_id: hex::encode(parsed.image_id),
            id_key_digest: hex::encode(parsed.id_key_digest),
            author_key_digest: hex::encode(parsed.author_key_digest),
            guest_svn: parsed.guest_svn,
            vmpl: parsed.vmpl,
            policy: parsed.policy.0,
            debug: parsed.policy.debug_allowed(),
            migrate_ma: parsed.policy.migrate_ma_allowed(),
            smt_allowed: parsed.policy.smt_allowed(),
            reported_tcb: SnpTcb {
                bootloader: tcb.bootloader,
                tee: tcb.tee,
                snp: tcb.snp,
                microcode: tcb.microcode,
                fmc: tcb.fmc,
            },
            chip_id: hex::encode(parsed.chip_id),
            chip_id_masked,
            vlek_csp: csp,
        })
    }
}

impl SnpVerifier {
    /// Checks a VCEK/VLEK certificate (DER) against the trusted chains at `now`, as when an
    /// operator's collateral bundle is loaded; returns the product line that endorses it.
    pub fn check_endorsement(&self, endorsement: &[u8], now: i64) -> Result<String> {
        Ok(self.endorsement(endorsement, now)?.product)
    }

    /// Checks a VCEK/VLEK certificate (DER) against the trusted chains at `now` once, for
    /// [`verify_endorsed`](Self::verify_endorsed).
    pub fn endorsement(&self, der: &[u8], now: i64) -> Result<Endorsement> {
        self.endorse(Cert::parse("VCEK/VLEK", der)?, now)
    }

    fn endorse(&self, cert: Cert, now: i64) -> Result<Endorsement> {
        let what = kind_name(&cert);
        let (product, intermediate) = self.roots.issuer_of(what, &cert)?;
        cert.check_signed_by(what, intermediate)?;
        let endorsement = Endorsement {
            product: product.name.clone(),
            ark: product.ark.clone(),
            intermediate: intermediate.clone(),
            cert,
        };
        endorsement.check_valid_at(now)?;
        Ok(endorsement)
    }
}

/// A DER INTEGER that fits a byte (SVNs are 0..=255; DER may prefix a zero byte).
fn der_small_integer(value: &[u8]) -> Option<u8> {
    let [0x02, len, body @ ..] = value else {
        return None;
    };
    if usize::from(*len) != body.len() || body.is_empty() || body.len() > 2 {
        return None;
    }
    match body {
        [v] if *v < 0x80 => Some(*v),
        [0, v] if *v >= 0x80 => Some(*v),
        _ => None,
    }
}

/// An IA5String/UTF8String extension value (the VLEK's CSP ID).
fn der_string(value: &[u8]) -> Option<String> {
    let [0x16 | 0x0c, len, body @ ..] = value else {
        return None;
    };
    (usize::from(*len) == body.len())
        .then(|| String::from_utf8(body.to_vec()).ok())
        .flatten()
}
