//! The operator's offline collateral bundle: VCEK/VLEK certificates for SEV-SNP and
//! QuoteCollateralV3 documents for TDX, loaded from files (a mounted ConfigMap) and never fetched
//! at release time. Every entry gets a status, so a missing or expired entry is visible before a
//! release needs it; a lookup that finds nothing says exactly what to add.

use std::collections::HashMap;

use serde::Serialize;

use crate::snp::index::{EndorsementKey, endorsed_by, needed_by};
use crate::snp::pem_certificates;
use crate::snp::{Endorsement, SigningKey, SnpVerifier};
use crate::tdx::MAX_COLLATERAL_LEN;
use crate::{Error, Result, Tee};

/// Whether an entry can serve releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum EntryStatus {
    Ready,
    /// Past its notAfter (SNP) or nextUpdate (TDX): kept out of lookups.
    Expired,
    /// Unreadable, or not endorsed by a pinned root: kept out of lookups.
    Invalid,
}

impl EntryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Expired => "expired",
            Self::Invalid => "invalid",
        }
    }
}

/// One file of the bundle and what became of it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub file: String,
    pub tee: Option<Tee>,
    pub status: EntryStatus,
    /// What it endorses (ready), or why it cannot be used.
    pub detail: String,
}

#[derive(Debug, Clone)]
struct Indexed {
    chip_id: Option<Vec<u8>>,
    endorsement: Endorsement,
}

/// The loaded bundle.
#[derive(Debug, Clone, Default)]
pub struct Collateral {
    snp: HashMap<EndorsementKey, Vec<Indexed>>,
    /// FMSPC (upper-case hex) → QuoteCollateralV3 JSON.
    tdx: HashMap<String, Vec<u8>>,
    entries: Vec<Entry>,
}

/// How a file is read, by its name.
fn kind_of(file: &str) -> Option<Tee> {
    let lower = file.to_ascii_lowercase();
    if lower.ends_with(".json") {
        Some(Tee::Tdx)
    } else if [".der", ".crt", ".cer", ".pem"]
        .iter()
        .any(|ext| lower.ends_with(ext))
    {
        Some(Tee::SevSnp)
    } else {
        None
    }
}

/// A certificate file as DER: a PEM file's one CERTIFICATE block, or the bytes as they are.
fn certificate_der(bytes: &[u8]) -> Result<Vec<u8>> {
    if !bytes.starts_with(b"-----BEGIN") {
        return Ok(bytes.to_vec());
    }
    let mut blocks = pem_certificates("VCEK/VLEK file", bytes)?;
    if blocks.len() != 1 {
        return Err(Error::Pem {
            what: "VCEK/VLEK file".into(),
            reason: format!("{} certificates; put one VCEK/VLEK per file", blocks.len()),
        });
    }
    Ok(blocks.remove(0))
}

fn tdx_entry(bytes: &[u8]) -> Result<(String, i64), String> {
    #[derive(serde::Deserialize)]
    struct Document {
        tcb_info: String,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct TcbInfo {
        fmspc: String,
        next_update: String,
    }
    if bytes.len() > MAX_COLLATERAL_LEN {
        return Err(format!(
            "{} bytes, more than the {MAX_COLLATERAL_LEN} any QuoteCollateralV3 has",
            bytes.len()
        ));
    }
    let document: Document = serde_json::from_slice(bytes)
        .map_err(|e| format!("not a QuoteCollateralV3 document: {e}"))?;
    let info: TcbInfo = serde_json::from_str(&document.tcb_info)
        .map_err(|e| format!("its tcb_info is not Intel TCB info: {e}"))?;
    let next_update = chrono::DateTime::parse_from_rfc3339(&info.next_update)
        .map_err(|e| format!("its tcb_info nextUpdate {:?}: {e}", info.next_update))?
        .timestamp();
    Ok((info.fmspc.to_ascii_uppercase(), next_update))
}

impl Collateral {
    /// Loads `files` (name, bytes): `*.json` are TDX QuoteCollateralV3 documents, `*.der`,
    /// `*.crt`, `*.cer` and `*.pem` VCEK/VLEK certificates, checked against `snp`'s pinned roots
    /// at `now`. Other names are listed as invalid. Never fails: each file gets its status.
    pub fn load(
        files: impl IntoIterator<Item = (String, Vec<u8>)>,
        snp: &SnpVerifier,
        now: i64,
    ) -> Self {
        let mut collateral = Self::default();
        for (file, bytes) in files {
            let entry = match kind_of(&file) {
                None => Entry {
                    file,
                    tee: None,
                    status: EntryStatus::Invalid,
                    detail: "not a collateral file: name it *.json (TDX QuoteCollateralV3) or *.der/*.pem (VCEK/VLEK)".into(),
                },
                Some(Tee::SevSnp) => collateral.add_snp(file, &bytes, snp, now),
                Some(Tee::Tdx) => collateral.add_tdx(file, &bytes, now),
            };
            collateral.entries.push(entry);
        }
        collateral.entries.sort_by(|a, b| a.file.cmp(&b.file));
        collateral
    }

    fn add_snp(&mut self, file: String, bytes: &[u8], snp: &SnpVerifier, now: i64) -> Entry {
        let entry = |status, detail| Entry {
            file: file.clone(),
            tee: Some(Tee::SevSnp),
            status,
            detail,
        };
        let der = match certificate_der(bytes) {
            Ok(der) => der,
            Err(e) => return entry(EntryStatus::Invalid, e.to_string()),
        };
        let endorsed = match endorsed_by(&der) {
            Ok(endorsed) => endorsed,
            Err(e) => return entry(EntryStatus::Invalid, e.to_string()),
        };
        let endorsement = match snp.endorsement(&der, now) {
            Ok(endorsement) => endorsement,
            Err(e @ Error::NotValidAt { .. }) if endorsed.not_after < now => {
                return entry(EntryStatus::Expired, e.to_string());
            }
            Err(e) => return entry(EntryStatus::Invalid, e.to_string()),
        };
        let detail = describe(
            &endorsed.key,
            endorsed.chip_id.as_deref(),
            endorsement.product(),
        );
        self.snp.entry(endorsed.key).or_default().push(Indexed {
            chip_id: endorsed.chip_id,
            endorsement,
        });
        entry(EntryStatus::Ready, detail)
    }

    fn add_tdx(&mut self, file: String, bytes: &[u8], now: i64) -> Entry {
        let entry = |status, detail| Entry {
            file: file.clone(),
            tee: Some(Tee::Tdx),
            status,
            detail,
        };
        match tdx_entry(bytes) {
            Err(why) => entry(EntryStatus::Invalid, why),
            Ok((fmspc, next_update)) if next_update < now => entry(
                EntryStatus::Expired,
                format!(
                    "collateral for FMSPC {fmspc} is past its nextUpdate ({next_update}); fetch a current one from Intel PCS or your PCCS"
                ),
            ),
            Ok((fmspc, _)) => {
                let detail = format!("TDX collateral for FMSPC {fmspc}");
                self.tdx.insert(fmspc, bytes.to_vec());
                entry(EntryStatus::Ready, detail)
            }
        }
    }

    /// Every file and its status, sorted by name.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Ready entries per TEE.
    pub fn ready(&self, tee: Tee) -> usize {
        match tee {
            Tee::SevSnp => self.snp.values().map(Vec::len).sum(),
            Tee::Tdx => self.tdx.len(),
        }
    }

    /// The endorsements that may have signed `report`: those of its key kind and TCB and, for a
    /// VCEK whose chip ID is not masked, of its chip. Their chains were checked at load
    /// ([`SnpVerifier::verify_endorsed`] re-checks only the validity windows).
    pub fn snp_endorsements(&self, report: &[u8]) -> Result<Vec<&Endorsement>> {
        let (key, chip) = needed_by(report)?;
        let found: Vec<&Endorsement> = self
            .snp
            .get(&key)
            .into_iter()
            .flatten()
            .filter(|e| chip.is_none() || e.chip_id == chip)
            .map(|e| &e.endorsement)
            .collect();
        if found.is_empty() {
            return Err(Error::NoEndorsement {
                needed: describe(&key, chip.as_deref(), "its product"),
            });
        }
        Ok(found)
    }

    /// The collateral of the quote's platform (by the FMSPC of its PCK certificate).
    pub fn tdx_collateral(&self, quote: &[u8]) -> Result<&[u8]> {
        let fmspc = crate::tdx::fmspc(quote)?;
        self.tdx
            .get(&fmspc)
            .map(Vec::as_slice)
            .ok_or(Error::NoTdxCollateral { fmspc })
    }
}

fn describe(key: &EndorsementKey, chip: Option<&[u8]>, product: &str) -> String {
    let tcb = &key.tcb;
    let fmc = tcb.fmc.map(|f| format!(" fmc={f}")).unwrap_or_default();
    let tcb = format!(
        "bootloader={} tee={} snp={} microcode={}{fmc}",
        tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode
    );
    match (key.signer, chip) {
        (SigningKey::Vcek, Some(chip)) => {
            format!("{product} VCEK of chip {} at TCB {tcb}", hex::encode(chip))
        }
        (SigningKey::Vcek, None) => format!("{product} VCEK (chip ID masked) at TCB {tcb}"),
        (SigningKey::Vlek, _) => format!("{product} VLEK at TCB {tcb}"),
    }
}
