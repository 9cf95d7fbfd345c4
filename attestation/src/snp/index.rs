//! Which VCEK/VLEK a report needs, so the broker picks the certificate from its collateral bundle
//! by what the report says instead of trying every certificate it holds.

use super::cert::Cert;
use super::{
    OID_BOOTLOADER, OID_FMC, OID_HW_ID, OID_MICROCODE, OID_SNP, OID_TEE, Parsed, SigningKey,
    der_small_integer, parse,
};
use crate::claims::SnpTcb;
use crate::{Error, Result};

/// What selects an endorsement: the kind of key and the TCB it was derived for (a VCEK is per
/// chip and TCB, a VLEK per provider and TCB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndorsementKey {
    pub signer: SigningKey,
    pub tcb: SnpTcb,
}

/// An endorsement's key and, for a VCEK, the chip it belongs to.
#[derive(Debug, Clone)]
pub struct Endorsed {
    pub key: EndorsementKey,
    /// HW_ID of a VCEK (64 bytes); `None` for a VLEK or a VCEK without one.
    pub chip_id: Option<Vec<u8>>,
    /// The certificate's notAfter (unix seconds).
    pub not_after: i64,
}

fn tcb_extension(cert: &Cert, oid: &'static str, name: &'static str) -> Result<u8> {
    let value = cert
        .extension(oid)
        .ok_or(Error::MissingExtension { oid, name })?;
    der_small_integer(value).ok_or_else(|| Error::Malformed {
        what: "VCEK/VLEK certificate",
        reason: format!("extension {oid} ({name}) is not a small DER INTEGER"),
    })
}

/// Reads what a VCEK/VLEK certificate (DER) endorses.
pub fn endorsed_by(der: &[u8]) -> Result<Endorsed> {
    endorsed_of(&Cert::parse("VCEK/VLEK", der)?)
}

pub(super) fn endorsed_of(cert: &Cert) -> Result<Endorsed> {
    let signer = match cert.subject_cn.as_str() {
        "SEV-VCEK" => SigningKey::Vcek,
        "SEV-VLEK" => SigningKey::Vlek,
        other => {
            return Err(Error::Malformed {
                what: "VCEK/VLEK certificate",
                reason: format!(
                    "its subject is \"{other}\"; an endorsement's common name is SEV-VCEK or SEV-VLEK"
                ),
            });
        }
    };
    let fmc = match cert.extension(OID_FMC) {
        Some(_) => Some(tcb_extension(cert, OID_FMC, "fmc")?),
        None => None,
    };
    let tcb = SnpTcb {
        bootloader: tcb_extension(cert, OID_BOOTLOADER, "bootloader")?,
        tee: tcb_extension(cert, OID_TEE, "tee")?,
        snp: tcb_extension(cert, OID_SNP, "snp")?,
        microcode: tcb_extension(cert, OID_MICROCODE, "microcode")?,
        fmc,
    };
    // AMD writes HW_ID either as a DER OCTET STRING (current certificates) or as the raw 64
    // bytes (older ones); both name the chip.
    let chip_id = match (signer, cert.extension(OID_HW_ID)) {
        (SigningKey::Vcek, Some([0x04, 0x40, body @ ..])) if body.len() == 64 => {
            Some(body.to_vec())
        }
        (SigningKey::Vcek, Some(raw)) if raw.len() == 64 => Some(raw.to_vec()),
        _ => None,
    };
    Ok(Endorsed {
        key: EndorsementKey { signer, tcb },
        chip_id,
        not_after: cert.not_after,
    })
}

/// What a report needs: the endorsement's key and the chip (`None` when the chip ID is masked
/// or the report is VLEK-signed).
pub fn needed_by(report: &[u8]) -> Result<(EndorsementKey, Option<Vec<u8>>)> {
    let Parsed { report, key, .. } = parse(report)?;
    let tcb = &report.reported_tcb;
    let needed = EndorsementKey {
        signer: key,
        tcb: SnpTcb {
            bootloader: tcb.bootloader,
            tee: tcb.tee,
            snp: tcb.snp,
            microcode: tcb.microcode,
            fmc: tcb.fmc,
        },
    };
    let masked = report.chip_id.iter().all(|b| *b == 0);
    let chip = (key == SigningKey::Vcek && !masked).then(|| report.chip_id.to_vec());
    Ok((needed, chip))
}
